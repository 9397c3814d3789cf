//! What changed between two versions of the vulnerability data: the
//! advisories added, changed and removed (by id, then `modified` and
//! content: a record republished with a new `modified` is a change even
//! when nothing Strata evaluates moved), and from
//! them the (ecosystem, package name) pairs whose matches may differ — the
//! only packages an update needs to match again.

use std::collections::{BTreeMap, BTreeSet};

use strata_proto::Ecosystem;

use super::{Advisory, Db};

/// The difference from one database to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Ids only the new data has.
    pub added: BTreeSet<String>,
    /// Ids both have, with a different `modified` or content (ranges,
    /// severity, aliases…).
    pub changed: BTreeSet<String>,
    /// Ids only the old data has: withdrawn, or dropped by the feed.
    pub removed: BTreeSet<String>,
    /// Every (ecosystem, name as the matcher keys it) an added, changed or
    /// removed advisory names, in its old or new form.
    pub touched: BTreeSet<(Ecosystem, String)>,
}

impl ChangeSet {
    /// Nothing changed: no package needs matching again.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Every name of both databases: what a full re-match touches.
    pub fn everything(old: &Db, new: &Db) -> ChangeSet {
        let mut all = ChangeSet::default();
        for a in old.advisories().iter().chain(new.advisories()) {
            touch(&mut all.touched, a);
        }
        all
    }
}

/// The changes from `old` to `new`.
pub fn diff(old: &Db, new: &Db) -> ChangeSet {
    let by_id = |db: &Db| -> BTreeMap<String, usize> {
        db.advisories()
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect()
    };
    let (old_ids, new_ids) = (by_id(old), by_id(new));
    let mut out = ChangeSet::default();
    for (id, &i) in &new_ids {
        let now = &new.advisories()[i];
        match old_ids.get(id) {
            None => {
                out.added.insert(id.clone());
                touch(&mut out.touched, now);
            }
            Some(&j) if old.advisories()[j] != *now => {
                out.changed.insert(id.clone());
                touch(&mut out.touched, now);
                touch(&mut out.touched, &old.advisories()[j]);
            }
            Some(_) => {}
        }
    }
    for (id, &j) in &old_ids {
        if !new_ids.contains_key(id) {
            out.removed.insert(id.clone());
            touch(&mut out.touched, &old.advisories()[j]);
        }
    }
    out
}

fn touch(touched: &mut BTreeSet<(Ecosystem, String)>, a: &Advisory) {
    for e in &a.affected {
        touched.insert((e.ecosystem, e.ecosystem.normalise_name(&e.name).into_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vulndb::{AffectedEntry, EvalRange, Event, RangeKind};

    fn advisory(id: &str, eco: Ecosystem, name: &str, fixed: &str) -> Advisory {
        Advisory {
            id: id.to_owned(),
            affected: vec![AffectedEntry {
                ecosystem: eco,
                release: None,
                name: name.to_owned(),
                ranges: vec![EvalRange {
                    kind: RangeKind::Ecosystem,
                    events: vec![Event::Introduced("0".into()), Event::Fixed(fixed.into())],
                }],
                versions: Vec::new(),
            }],
            ..Advisory::default()
        }
    }

    #[test]
    fn added_changed_removed_and_the_names_they_touch() {
        let old = Db::from_advisories(
            vec![
                advisory("A", Ecosystem::PyPI, "Requests", "2.20.0"),
                advisory("B", Ecosystem::Npm, "lodash", "4.17.5"),
                advisory("C", Ecosystem::Go, "stdlib", "1.19.9"),
            ],
            Vec::new(),
        );
        let new = Db::from_advisories(
            vec![
                advisory("A", Ecosystem::PyPI, "Requests", "2.20.0"),
                advisory("B", Ecosystem::Npm, "lodash", "4.17.21"),
                advisory("D", Ecosystem::Maven, "org.yaml:snakeyaml", "1.31"),
            ],
            Vec::new(),
        );
        let d = diff(&old, &new);
        assert_eq!(d.added, BTreeSet::from(["D".to_owned()]));
        assert_eq!(d.changed, BTreeSet::from(["B".to_owned()]));
        assert_eq!(d.removed, BTreeSet::from(["C".to_owned()]));
        assert_eq!(
            d.touched,
            BTreeSet::from([
                (Ecosystem::Npm, "lodash".to_owned()),
                (Ecosystem::Go, "stdlib".to_owned()),
                (Ecosystem::Maven, "org.yaml:snakeyaml".to_owned()),
            ])
        );
        assert!(diff(&new, &new).is_empty());
        // The same content republished with a new `modified` is a change.
        let mut later = advisory("A", Ecosystem::PyPI, "Requests", "2.20.0");
        later.modified = "2025-01-01T00:00:00Z".into();
        let republished = Db::from_advisories(vec![later], Vec::new());
        let only_a = Db::from_advisories(
            vec![advisory("A", Ecosystem::PyPI, "Requests", "2.20.0")],
            Vec::new(),
        );
        let d = diff(&only_a, &republished);
        assert_eq!(d.changed, BTreeSet::from(["A".to_owned()]));
        assert_eq!(
            d.touched,
            BTreeSet::from([(Ecosystem::PyPI, "requests".to_owned())])
        );
        let all = ChangeSet::everything(&old, &new);
        assert!(
            all.touched.contains(&(Ecosystem::PyPI, "requests".to_owned())),
            "names as the matcher keys them"
        );
        assert_eq!(all.touched.len(), 4);
    }
}
