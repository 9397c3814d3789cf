use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::*;

fn real_data() -> Arc<RealData> {
    static DATA: OnceLock<Arc<RealData>> = OnceLock::new();
    DATA.get_or_init(|| Arc::new(RealData::load(&data::default_testdata()).unwrap()))
        .clone()
}

fn fleet(images: usize, seed: u64) -> Fleet {
    let config = FleetConfig {
        images,
        seed,
        base_bytes: 4 << 10,
        app_bytes: 1 << 10,
        ..FleetConfig::default()
    };
    Fleet::generate(config, real_data())
}

#[test]
fn the_same_seed_gives_the_same_fleet_and_bytes() {
    let (a, b) = (fleet(300, 7), fleet(300, 7));
    assert_eq!(a.layers, b.layers);
    assert_eq!(
        a.repositories
            .iter()
            .map(|r| (&r.name, &r.tags))
            .collect::<Vec<_>>(),
        b.repositories
            .iter()
            .map(|r| (&r.name, &r.tags))
            .collect::<Vec<_>>()
    );
    for i in [0, 1, a.layers.len() / 2, a.layers.len() - 1] {
        let (x, y) = (a.build_layer(i), b.build_layer(i));
        assert_eq!(x.digest, y.digest, "layer {i}");
        // And again from the same fleet: blobs are made on request.
        assert_eq!(a.build_layer(i).blob, x.blob);
    }
    let other = fleet(300, 8);
    let digests = |f: &Fleet| (0..20).map(|i| f.build_layer(i).digest).collect::<Vec<_>>();
    assert_ne!(digests(&a), digests(&other));
}

#[test]
fn the_fleet_has_the_shape_of_a_real_one() {
    let f = fleet(2_000, 1);
    assert_eq!(f.images.len(), 2_000);
    assert!((20..=60).contains(&f.bases.len()), "{} bases", f.bases.len());
    // Skewed popularity: the most used base carries far more than its share.
    let mut per_base: HashMap<usize, usize> = HashMap::new();
    for image in &f.images {
        *per_base.entry(image.base).or_default() += 1;
    }
    let top = per_base.values().max().copied().unwrap_or(0);
    assert!(
        top * f.bases.len() > 4 * f.images.len(),
        "top base {top} of {}",
        f.images.len()
    );
    // Several tags per repository, `latest` on the newest.
    let tags: usize = f.repositories.iter().map(|r| r.tags.len() - 1).sum();
    assert_eq!(tags, f.images.len());
    assert!(
        f.repositories.len() * 2 < f.images.len(),
        "{} repositories",
        f.repositories.len()
    );
    for r in &f.repositories {
        let (last_tag, latest) = (r.tags[r.tags.len() - 2].1, r.tags[r.tags.len() - 1].clone());
        assert_eq!(latest, ("latest".to_owned(), last_tag));
    }
    // 1–3 application layers per image over its base (and an optional
    // organisation layer); shared layers make unique layers far fewer than
    // the layers the images list.
    for image in &f.images {
        let over = image.layers.len() - f.bases[image.base].layers.len();
        let app = image
            .layers
            .iter()
            .filter(|&&l| {
                matches!(
                    f.layers[l],
                    LayerKind::Deps { .. } | LayerKind::Code { .. } | LayerKind::Config { .. }
                )
            })
            .count();
        assert!((1..=3).contains(&app), "{app} application layers");
        assert!(over >= app);
    }
    let (unique, refs) = f.layer_references();
    assert!(unique * 2 < refs, "{unique} unique of {refs}");
}

#[test]
fn layers_hold_real_package_databases() {
    let f = fleet(200, 1);
    let files = |kind: fn(&LayerKind) -> bool| -> Vec<(String, Vec<u8>)> {
        let i = f.layers.iter().position(kind).expect("a layer of that kind");
        f.layer_files(i)
    };
    let debian = files(|k| matches!(k, LayerKind::Os { os: Os::Debian11, .. }));
    let status = debian.iter().find(|(p, _)| p == "var/lib/dpkg/status").unwrap();
    let text = String::from_utf8_lossy(&status.1);
    let (name, version) = &real_data().bullseye[0];
    let stanzas = text.matches("Package: ").count();
    assert!(stanzas >= 60, "{stanzas} packages");
    assert!(
        real_data().bullseye.iter().any(|(n, v)| text.contains(&format!(
            "Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n"
        ))),
        "{name} {version}"
    );
    let alpine = files(|k| {
        matches!(
            k,
            LayerKind::Os {
                os: Os::Alpine310,
                ..
            }
        )
    });
    assert!(alpine.iter().any(|(p, _)| p == "lib/apk/db/installed"));
    let python = files(|k| {
        matches!(
            k,
            LayerKind::Deps {
                runtime: Runtime::Python,
                ..
            }
        )
    });
    let metadata: Vec<&String> = python
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with("METADATA"))
        .collect();
    assert!(!metadata.is_empty());
    // Each names a version OSV lists as affected.
    for path in metadata {
        let dist = path.split('/').find(|s| s.ends_with(".dist-info")).unwrap();
        let (name, version) = dist.trim_end_matches(".dist-info").rsplit_once('-').unwrap();
        assert!(
            real_data().pypi[name].contains(&version.to_owned()),
            "{name} {version}"
        );
    }
    // Padded to the configured size.
    let code = files(|k| matches!(k, LayerKind::Code { .. }));
    assert!(code.iter().any(|(p, b)| p == "app/app.bin" && b.len() == 1 << 10));
}

#[test]
fn a_new_revision_changes_only_the_code_layer() {
    let mut f = fleet(50, 1);
    let old = f.images[3].clone();
    let new = f.new_revision(3, 1);
    let new = &f.images[new];
    assert_eq!(old.layers.len(), new.layers.len());
    let differ: Vec<usize> = (0..old.layers.len())
        .filter(|&i| old.layers[i] != new.layers[i])
        .collect();
    assert_eq!(differ.len(), 1);
    assert!(matches!(
        f.layers[new.layers[differ[0]]],
        LayerKind::Code { revision: 1, .. }
    ));
}
