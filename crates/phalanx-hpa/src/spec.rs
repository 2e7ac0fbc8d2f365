//! The `autoscaling/v2` HorizontalPodAutoscaler as read from a manifest, with the API server's
//! defaults applied (`SetDefaults_HorizontalPodAutoscaler` and the behavior defaults).

use serde::Deserialize;

/// A spec the model cannot replay, or a manifest that is not an HPA.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The YAML does not parse into an HPA.
    #[error("not an autoscaling/v2 HorizontalPodAutoscaler: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A field holds a value Kubernetes would reject or the model does not cover.
    #[error("{0}")]
    Invalid(String),
}

/// `HorizontalPodAutoscaler` (only the fields the controller reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscaler {
    /// Must be `autoscaling/v2`.
    pub api_version: String,
    /// Must be `HorizontalPodAutoscaler`.
    pub kind: String,
    /// The spec.
    pub spec: HpaSpec,
}

/// `spec` of the HPA.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaSpec {
    /// Lower bound (API default 1).
    #[serde(default)]
    pub min_replicas: Option<i32>,
    /// Upper bound.
    pub max_replicas: i32,
    /// The metrics; API default: CPU at 80 % utilization.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    /// Scaling behavior; `None` selects the controller's legacy rules.
    #[serde(default)]
    pub behavior: Option<Behavior>,
}

/// One entry of `spec.metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum MetricSpec {
    /// A per-pod metric from the custom metrics API, averaged over the pods.
    Pods {
        /// The metric and its target.
        pods: PodsMetricSource,
    },
    /// A resource (CPU, memory) from the resource metrics API.
    Resource {
        /// The resource and its target.
        resource: ResourceMetricSource,
    },
}

/// `pods:` of a Pods metric.
#[derive(Debug, Clone, Deserialize)]
pub struct PodsMetricSource {
    /// `metric.name`.
    pub metric: MetricIdentifier,
    /// The target.
    pub target: MetricTarget,
}

/// `metric:` of a metric source.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricIdentifier {
    /// The custom metric's name.
    pub name: String,
}

/// `resource:` of a Resource metric.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceMetricSource {
    /// `cpu` or `memory`.
    pub name: String,
    /// The target.
    pub target: MetricTarget,
}

/// `target:` of a metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    /// `Utilization`, `AverageValue` or `Value`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `AverageValue`: a quantity.
    #[serde(default)]
    pub average_value: Option<Quantity>,
    /// For `Utilization`: percent of the pods' requests.
    #[serde(default)]
    pub average_utilization: Option<i32>,
}

/// A Kubernetes quantity (`"100"`, `100`, `"250m"`, `"1.5k"`), as a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity(pub f64);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Quantity(n)),
            Raw::Text(s) => parse_quantity(&s).map(Quantity).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses a quantity with a decimal SI (`m`, `k`, `M`, `G`) or binary (`Ki`, `Mi`, `Gi`) suffix.
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad quantity {s:?}"))?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("bad quantity suffix in {s:?}")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("bad quantity {s:?}"));
    }
    Ok(n * factor)
}

/// `spec.behavior`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// Scale-up rules; defaults when absent.
    #[serde(default)]
    pub scale_up: Option<ScalingRulesSpec>,
    /// Scale-down rules; defaults when absent.
    #[serde(default)]
    pub scale_down: Option<ScalingRulesSpec>,
}

/// `scaleUp` / `scaleDown` as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRulesSpec {
    /// Seconds of past recommendations considered.
    #[serde(default)]
    pub stabilization_window_seconds: Option<i32>,
    /// `Max` (default), `Min` or `Disabled`.
    #[serde(default)]
    pub select_policy: Option<SelectPolicy>,
    /// The policies; defaults when absent.
    #[serde(default)]
    pub policies: Option<Vec<Policy>>,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// `type` of a scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PolicyType {
    /// An absolute number of pods per period.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

/// One scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Pods or Percent.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// The amount of change allowed per period.
    pub value: i32,
    /// The period (1..=1800 s).
    pub period_seconds: i32,
}

/// Scaling rules with the defaults filled in, as the controller sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingRules {
    /// Stabilization window in seconds.
    pub stabilization_window_seconds: i32,
    /// How the policies combine.
    pub select_policy: SelectPolicy,
    /// The policies.
    pub policies: Vec<Policy>,
}

/// What the controller scales on, with targets resolved to numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A Pods metric with an `AverageValue` target.
    Pods {
        /// Custom metric name.
        name: String,
        /// Target average per pod.
        target: f64,
    },
    /// CPU utilization in percent of the request.
    Cpu {
        /// Target percent.
        target_utilization: i32,
    },
}

/// A validated HPA, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Hpa {
    /// `minReplicas`.
    pub min_replicas: i32,
    /// `maxReplicas`.
    pub max_replicas: i32,
    /// The metrics.
    pub metrics: Vec<Metric>,
    /// `Some` with defaults applied when `behavior` is set; `None` selects the legacy rules
    /// (scale-up at most to max(2 × current, 4), down-scale stabilization 300 s).
    pub behavior: Option<(ScalingRules, ScalingRules)>,
}

/// The controller's default down-scale stabilization (`--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DEFAULT_DOWNSCALE_STABILIZATION_S: i32 = 300;

fn default_scale_up() -> ScalingRules {
    ScalingRules {
        stabilization_window_seconds: 0,
        select_policy: SelectPolicy::Max,
        policies: vec![
            Policy { kind: PolicyType::Percent, value: 100, period_seconds: 15 },
            Policy { kind: PolicyType::Pods, value: 4, period_seconds: 15 },
        ],
    }
}

fn default_scale_down() -> ScalingRules {
    ScalingRules {
        stabilization_window_seconds: DEFAULT_DOWNSCALE_STABILIZATION_S,
        select_policy: SelectPolicy::Max,
        policies: vec![Policy { kind: PolicyType::Percent, value: 100, period_seconds: 15 }],
    }
}

fn fill(spec: Option<&ScalingRulesSpec>, default: ScalingRules, what: &str) -> Result<ScalingRules, SpecError> {
    let Some(spec) = spec else { return Ok(default) };
    let rules = ScalingRules {
        stabilization_window_seconds: spec.stabilization_window_seconds.unwrap_or(default.stabilization_window_seconds),
        select_policy: spec.select_policy.unwrap_or(SelectPolicy::Max),
        policies: spec.policies.clone().unwrap_or(default.policies),
    };
    if !(0..=3600).contains(&rules.stabilization_window_seconds) {
        return Err(SpecError::Invalid(format!("{what}.stabilizationWindowSeconds must be 0..=3600")));
    }
    if rules.policies.is_empty() {
        return Err(SpecError::Invalid(format!("{what}.policies must not be empty")));
    }
    for p in &rules.policies {
        if p.value <= 0 || !(1..=1800).contains(&p.period_seconds) {
            return Err(SpecError::Invalid(format!("{what}: policy value must be > 0 and periodSeconds 1..=1800")));
        }
    }
    Ok(rules)
}

impl Hpa {
    /// Parses the first HPA document of a manifest.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            if value.get("kind").and_then(|k| k.as_str()) == Some("HorizontalPodAutoscaler") {
                let hpa: HorizontalPodAutoscaler = serde_yaml::from_value(value)?;
                return Self::from_manifest(&hpa);
            }
        }
        Err(SpecError::Invalid("no HorizontalPodAutoscaler document".into()))
    }

    /// Validates a parsed manifest and applies the API defaults.
    pub fn from_manifest(hpa: &HorizontalPodAutoscaler) -> Result<Self, SpecError> {
        if hpa.api_version != "autoscaling/v2" || hpa.kind != "HorizontalPodAutoscaler" {
            return Err(SpecError::Invalid(format!("{} {} is not autoscaling/v2", hpa.api_version, hpa.kind)));
        }
        let spec = &hpa.spec;
        let min_replicas = spec.min_replicas.unwrap_or(1);
        if min_replicas < 1 || spec.max_replicas < min_replicas {
            return Err(SpecError::Invalid("need 1 <= minReplicas <= maxReplicas".into()));
        }
        let mut metrics = Vec::new();
        for m in &spec.metrics {
            metrics.push(match m {
                MetricSpec::Pods { pods } => {
                    let target = match (pods.target.kind.as_str(), pods.target.average_value) {
                        ("AverageValue", Some(q)) if q.0 > 0.0 => q.0,
                        _ => {
                            return Err(SpecError::Invalid(format!(
                                "Pods metric {} needs an AverageValue target > 0",
                                pods.metric.name
                            )))
                        }
                    };
                    Metric::Pods { name: pods.metric.name.clone(), target }
                }
                MetricSpec::Resource { resource } => {
                    if resource.name != "cpu" {
                        return Err(SpecError::Invalid(format!("resource {} is not modelled", resource.name)));
                    }
                    match (resource.target.kind.as_str(), resource.target.average_utilization) {
                        ("Utilization", Some(u)) if u > 0 => Metric::Cpu { target_utilization: u },
                        _ => return Err(SpecError::Invalid("cpu needs a Utilization target > 0".into())),
                    }
                }
            });
        }
        if metrics.is_empty() {
            metrics.push(Metric::Cpu { target_utilization: 80 });
        }
        let behavior = match &spec.behavior {
            None => None,
            Some(b) => Some((
                fill(b.scale_up.as_ref(), default_scale_up(), "scaleUp")?,
                fill(b.scale_down.as_ref(), default_scale_down(), "scaleDown")?,
            )),
        };
        Ok(Hpa { min_replicas, max_replicas: spec.max_replicas, metrics, behavior })
    }
}

/// The `rate(...[w])` window, in seconds, of the prometheus-adapter rule that serves `metric`
/// (the ConfigMap of `deploy/k8s/prometheus-adapter-rules.yaml`); `None` when its query has no
/// range (a gauge).
pub fn adapter_rate_window(configmap: &str, metric: &str) -> Result<Option<f64>, String> {
    let cm: serde_yaml::Value = serde_yaml::from_str(configmap).map_err(|e| e.to_string())?;
    let config = cm["data"]["config.yaml"].as_str().ok_or("no data.config.yaml")?;
    let config: serde_yaml::Value = serde_yaml::from_str(config).map_err(|e| e.to_string())?;
    let rules = config["rules"].as_sequence().ok_or("no rules")?;
    let rule = rules
        .iter()
        .find(|r| r["name"]["as"].as_str() == Some(metric))
        .ok_or(format!("no adapter rule serves {metric}"))?;
    let query = rule["metricsQuery"].as_str().ok_or("rule without metricsQuery")?;
    let Some(open) = query.find("}[") else { return Ok(None) };
    let rest = &query[open + 2..];
    let close = rest.find(']').ok_or("unclosed range")?;
    let range = &rest[..close];
    let (n, unit) = range.split_at(range.len() - 1);
    let n: f64 = n.parse().map_err(|_| format!("bad range [{range}]"))?;
    match unit {
        "s" => Ok(Some(n)),
        "m" => Ok(Some(n * 60.0)),
        _ => Err(format!("range [{range}] not in s or m")),
    }
}
