//! Reports as callers read them: where they are stored, re-matched when
//! the vulnerability data changed since, and served pre-encoded from memory
//! for `GetReport`.

use bytes::Bytes;
use object_store::{ObjectStoreExt as _, path::Path as StorePath};
use strata_proto::{Report, SeverityCounts, v1};

use super::error::from_json;
use super::{Coordinator, CoordinatorError};
use crate::util::lock;

/// Reports kept in memory for GetReport (a simple bound: the cache starts
/// afresh when full; a report is tens of KiB for a few hundred packages).
const REPORT_CACHE_ENTRIES: usize = 256;

impl Coordinator {
    /// The scan's report against the vulnerability data in force now:
    /// re-matched from the stored packages when the data changed since.
    pub async fn report(&self, id: &str) -> Result<Report, CoordinatorError> {
        let scan = self
            .scan(id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("scan {id}")))?;
        let Some(key) = &scan.report_key else {
            return Err(CoordinatorError::NotFound(format!(
                "scan {id} has no report yet (it is {})",
                scan.status.as_str()
            )));
        };
        let bytes = self
            .inner
            .store
            .get(&StorePath::from(key.as_str()))
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?
            .bytes()
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?;
        let report: Report = from_json("report", &bytes)?;
        let vulndb = self.vulndb();
        if report.vulndb_version == vulndb.matcher.vulndb_version() {
            return Ok(report);
        }
        tokio::task::spawn_blocking(move || {
            let mut report = report;
            report.findings = vulndb
                .matcher
                .match_packages(report.os_release.as_ref(), &report.packages);
            let mut counts = SeverityCounts::default();
            for f in &report.findings {
                counts.add(f.severity);
            }
            report.counts = counts;
            report.vulndb_version = vulndb.matcher.vulndb_version().to_owned();
            report
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("matching task: {e}")))
    }

    /// [`Self::report`] as its protobuf bytes, served from memory while the
    /// vulnerability data is unchanged: a report is written once per scan,
    /// so the same scan id and data version always give the same bytes.
    /// Repeated GetReports (CI jobs polling, dashboards) then cost a
    /// reference-counted copy instead of a store read, a JSON parse, a
    /// conversion and an encoding (see `api/report_reply.rs`).
    pub async fn report_encoded(&self, id: &str) -> Result<Bytes, CoordinatorError> {
        let version = self.vulndb().matcher.vulndb_version().to_owned();
        if let Some((v, bytes)) = lock(&self.inner.encoded_reports).get(id)
            && *v == version
        {
            return Ok(bytes.clone());
        }
        let report: v1::Report = self.report(id).await?.into();
        let bytes = Bytes::from(prost::Message::encode_to_vec(&report));
        // Only reports matched against the data in force now are kept.
        if report.vulndb_version == version {
            let mut cache = lock(&self.inner.encoded_reports);
            if cache.len() >= REPORT_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(id.to_owned(), (version, bytes.clone()));
        }
        Ok(bytes)
    }
}

/// Where a scan's report is stored.
pub fn report_path(scan_id: &str) -> StorePath {
    StorePath::from(format!("reports/{scan_id}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_stored_by_scan_id() {
        assert_eq!(
            report_path("s-0123456789abcdef01234567").as_ref(),
            "reports/s-0123456789abcdef01234567.json"
        );
    }
}
