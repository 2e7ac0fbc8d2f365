//! Request priority classes and client tiers.

use std::{fmt, str::FromStr};

/// How much a request matters when capacity is short. Ordered: `Critical > ... > Background`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background work: batch jobs, prefetch, crawlers. First to be shed.
    Background = 0,
    /// Low priority: can wait or be refused.
    Low = 1,
    /// Ordinary traffic.
    #[default]
    Normal = 2,
    /// Interactive traffic that users wait on.
    High = 3,
    /// Must succeed: health checks, payments, control plane.
    Critical = 4,
}

impl Priority {
    /// Every class, highest first.
    pub const ALL: [Priority; 5] =
        [Priority::Critical, Priority::High, Priority::Normal, Priority::Low, Priority::Background];

    /// The lowercase label used in headers, configuration and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Background => "background",
        }
    }

    /// A dense index, `0` for `Critical` up to `4` for `Background`, for per-class arrays.
    pub const fn index(self) -> usize {
        4 - self as usize
    }

    /// A request's priority: its [`Classification`](crate::Classification) (what
    /// [`ClassifyLayer`](crate::ClassifyLayer) inserts), else a plain `Priority` extension set by
    /// the application, else the default.
    pub fn of(extensions: &http::Extensions) -> Priority {
        match extensions.get::<crate::Classification>() {
            Some(c) => c.priority,
            None => extensions.get::<Priority>().copied().unwrap_or_default(),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown priority or tier name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownClass(pub String);

impl fmt::Display for UnknownClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown class name {:?}", self.0)
    }
}

impl std::error::Error for UnknownClass {}

impl FromStr for Priority {
    type Err = UnknownClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Priority::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownClass(s.to_owned()))
    }
}

/// What a client has paid for: selects its rate-limit quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Clients held to a reduced quota (abuse, unpaid invoices).
    Throttled = 0,
    /// Anonymous and free clients.
    Basic = 1,
    /// Ordinary registered clients.
    #[default]
    Standard = 2,
    /// Paying clients with the largest quotas.
    Premium = 3,
}

impl Tier {
    /// A client's tier: its request's [`Classification`](crate::Classification), else a plain
    /// `Tier` extension set by the application, else the default.
    pub fn of(extensions: &http::Extensions) -> Tier {
        match extensions.get::<crate::Classification>() {
            Some(c) => c.tier,
            None => extensions.get::<Tier>().copied().unwrap_or_default(),
        }
    }

    /// Every tier, highest first.
    pub const ALL: [Tier; 4] = [Tier::Premium, Tier::Standard, Tier::Basic, Tier::Throttled];

    /// The lowercase label used in configuration and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Premium => "premium",
            Tier::Standard => "standard",
            Tier::Basic => "basic",
            Tier::Throttled => "throttled",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = UnknownClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Tier::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownClass(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_order_critical_first_and_index_densely() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::Low > Priority::Background);
        let idx: Vec<usize> = Priority::ALL.iter().map(|p| p.index()).collect();
        assert_eq!(idx, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn names_round_trip_case_insensitively() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().to_uppercase().parse::<Priority>(), Ok(p));
        }
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>(), Ok(t));
        }
        assert!("urgent".parse::<Priority>().is_err());
    }

    #[test]
    fn a_requests_classes_come_from_its_classification_else_plain_extensions() {
        let mut ext = http::Extensions::new();
        assert_eq!((Priority::of(&ext), Tier::of(&ext)), (Priority::Normal, Tier::Standard));
        // Set by an application without ClassifyLayer.
        ext.insert(Priority::Low);
        ext.insert(Tier::Basic);
        assert_eq!((Priority::of(&ext), Tier::of(&ext)), (Priority::Low, Tier::Basic));
        // ClassifyLayer's one extension wins.
        ext.insert(crate::Classification { priority: Priority::Critical, tier: Tier::Premium });
        assert_eq!((Priority::of(&ext), Tier::of(&ext)), (Priority::Critical, Tier::Premium));
    }
}
