//! A replay of the Kubernetes HorizontalPodAutoscaler (`autoscaling/v2`) on measured pods.
//!
//! There is no cluster on the development machines, so the HPA's reaction time is computed
//! instead of observed: [`spec::Hpa`] reads the manifest as it is, [`controller::Controller`]
//! makes the controller's decision at every sync (the replica calculator with its tolerance
//! and its handling of missing and unready pods, then the stabilization windows, scaling
//! policies and `selectPolicy`), and [`sim::replay`] runs it against pods that take the
//! measured time to start and serve at most the measured capacity, behind a metrics pipeline
//! with the scrape interval, rate window and adapter delay of a real one.
//!
//! ```
//! use phalanx_hpa::{controller::Controller, spec::Hpa};
//!
//! let hpa = Hpa::from_yaml(
//!     "apiVersion: autoscaling/v2
//! kind: HorizontalPodAutoscaler
//! spec:
//!   maxReplicas: 10
//!   metrics:
//!     - type: Pods
//!       pods: { metric: { name: rps }, target: { type: AverageValue, averageValue: \"100\" } }
//! ",
//! )
//! .unwrap();
//! let mut ctl = Controller::new(hpa);
//! let pods = phalanx_hpa::controller::tests_support::steady_pods(2, 200.0);
//! // 2 pods at 200 each against a target of 100: double.
//! assert_eq!(ctl.sync(0.0, 2, &pods, 1.0).replicas, 4);
//! ```

pub mod controller;
pub mod report;
pub mod sim;
pub mod spec;
