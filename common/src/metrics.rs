//! The families the coordinator and the worker both count verdicts and
//! scan limits in, with every label known up front, so each series exists
//! (at 0) from the first scrape: a dashboard's rate of `unscannable` or of
//! `max_depth` hits is 0, not absent, until the first one.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: String,
}

/// Counters by verdict level and by scan limit.
#[derive(Clone, Default)]
pub struct VerdictFamilies {
    pub verdicts: Family<VerdictLabel, Counter>,
    pub limits_hit: Family<LimitLabel, Counter>,
}

impl VerdictFamilies {
    /// The families with a series for each of `verdicts` and `limits`.
    pub fn seeded<'a>(verdicts: impl IntoIterator<Item = &'a str>, limits: impl IntoIterator<Item = &'a str>) -> Self {
        let f = Self::default();
        for verdict in verdicts {
            let _ = f.verdicts.get_or_create(&VerdictLabel { verdict: verdict.into() });
        }
        for limit in limits {
            let _ = f.limits_hit.get_or_create(&LimitLabel { limit: limit.into() });
        }
        f
    }

    pub fn verdict(&self, label: &str) {
        self.verdicts.get_or_create(&VerdictLabel { verdict: label.into() }).inc();
    }

    pub fn limit_hit(&self, limit: &str) {
        self.limits_hit.get_or_create(&LimitLabel { limit: limit.into() }).inc();
    }
}
