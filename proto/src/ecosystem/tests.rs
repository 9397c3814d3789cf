use super::*;
use crate::domain::Package;
use crate::purl::Purl;

/// Walks every row: the table agrees with itself and with the purl module.
#[test]
fn the_table_is_self_consistent() {
    assert_eq!(Ecosystem::ALL.len(), TABLE.len());
    for (i, &e) in Ecosystem::ALL.iter().enumerate() {
        let row = e.row();
        assert_eq!(e as usize, i);
        assert!(std::ptr::eq(row, &TABLE[i]));

        // Every OSV name round-trips, and only the exact name parses.
        assert!(!row.osv_name.is_empty());
        assert_eq!(row.osv_name.parse::<Ecosystem>(), Ok(e));
        assert_eq!(e.to_string(), row.osv_name);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Ecosystem>(&json).unwrap(), e);
        assert!(format!("{}:1", row.osv_name).parse::<Ecosystem>().is_err());

        // Every purl type and namespace in the table parses back to it.
        let form = &row.purl;
        assert!(
            !form.ty.is_empty() && form.ty == form.ty.to_ascii_lowercase(),
            "{e}"
        );
        assert!(Ecosystem::is_purl_type(form.ty));
        for ns in form.namespace.iter().chain(form.also) {
            assert_eq!(Ecosystem::from_purl(form.ty, ns), Some(e), "{e}: {ns}");
            let text = format!("pkg:{}/{ns}/x@1", form.ty);
            assert_eq!(Purl::parse(&text).map(|p| p.ecosystem()), Ok(e), "{text}");
        }
        let name = match form.name {
            PurlName::Name => "x".to_owned(),
            PurlName::Joined(sep) => format!("ns{sep}x"),
            PurlName::Path => "ns/x/v2".to_owned(),
        };
        assert!(row.version_scheme.is_some(), "{e}: no version scheme");
        let built = Purl::package(e, &name, "1", None).unwrap();
        let back = Purl::parse(built.as_str()).unwrap();
        assert_eq!((back.ecosystem(), back.name()), (e, name.as_str()), "{built}");

        match &row.os {
            // An OS ecosystem has a family, a distribution namespace in its
            // purls, os-release ids that name it, and a type shared only by
            // its family.
            Some(os) => {
                assert!(form.namespace.is_some(), "{e}: OS purls name the distribution");
                assert_eq!(form.name, PurlName::Name, "{e}");
                assert!(!os.os_release_ids.is_empty(), "{e}: no os-release ids");
                for id in os.os_release_ids {
                    let (OsId::Is(id) | OsId::Prefix(id)) = *id;
                    assert!(!id.is_empty() && *id == id.to_ascii_lowercase(), "{e}");
                    assert_eq!(Ecosystem::from_os_release_id(id), Some(e), "{e}: {id}");
                    assert_eq!(Ecosystem::from_os_release_id(&id.to_uppercase()), Some(e));
                }
                assert_eq!(e.family(), Some(os.family));
                for &other in Ecosystem::ALL {
                    if other.row().purl.ty == form.ty {
                        assert_eq!(other.family(), Some(os.family), "{e} and {other}");
                    }
                }
            }
            // A language ecosystem's purl type names it alone.
            None => {
                assert!(form.namespace.is_none() && form.also.is_empty(), "{e}");
                let same_type = TABLE.iter().filter(|r| r.purl.ty == form.ty).count();
                assert_eq!(same_type, 1, "{e}: purl type {} is shared", form.ty);
                assert_eq!(e.family(), None);
                assert_eq!(e.release_key("12.5"), None);
            }
        }
    }
}

#[test]
fn os_release_ids() {
    let id = |s| Ecosystem::from_os_release_id(s);
    assert_eq!(id("debian"), Some(Ecosystem::Debian));
    assert_eq!(id("rhel"), Some(Ecosystem::RedHat));
    assert_eq!(id("rocky"), Some(Ecosystem::RockyLinux));
    assert_eq!(id("sle-micro"), Some(Ecosystem::Suse));
    assert_eq!(id("opensuse-tumbleweed"), Some(Ecosystem::OpenSuse));
    assert_eq!(id("Ubuntu"), Some(Ecosystem::Ubuntu));
    assert_eq!(id("kali"), None);
    assert_eq!(id(""), None);

    assert_eq!(Ecosystem::RedHat.os_release_id("redhat"), "rhel");
    assert_eq!(Ecosystem::RedHat.os_release_id("rhel"), "rhel");
    assert_eq!(Ecosystem::Suse.os_release_id("suse"), "sles");
    assert_eq!(Ecosystem::Suse.os_release_id("sle"), "sles");
    assert_eq!(
        Ecosystem::OpenSuse.os_release_id("opensuse-leap"),
        "opensuse-leap"
    );
    assert_eq!(Ecosystem::Debian.os_release_id("debian"), "debian");
}

#[test]
fn release_rules() {
    assert_eq!(Ecosystem::Debian.release_key("12.5").as_deref(), Some("12"));
    assert_eq!(Ecosystem::RockyLinux.release_key("9.3").as_deref(), Some("9"));
    assert_eq!(Ecosystem::Alpine.release_key("3.19.1").as_deref(), Some("3.19"));
    assert_eq!(Ecosystem::Alpine.release_key("edge").as_deref(), Some("edge"));
    assert_eq!(Ecosystem::Ubuntu.release_key(" 22.04 ").as_deref(), Some("22.04"));
    assert_eq!(Ecosystem::Debian.release_key("  "), None);

    let osv = |e: Ecosystem, s| e.osv_release(s);
    assert_eq!(osv(Ecosystem::Alpine, "v3.19").as_deref(), Some("3.19"));
    assert_eq!(osv(Ecosystem::Ubuntu, "22.04:LTS").as_deref(), Some("22.04"));
    assert_eq!(
        osv(Ecosystem::Ubuntu, "Pro:18.04:LTS").as_deref(),
        Some("pro-18.04")
    );
    assert_eq!(
        osv(Ecosystem::RedHat, "enterprise_linux:9::appstream").as_deref(),
        Some("9")
    );
    assert_eq!(osv(Ecosystem::RedHat, "enterprise_linux"), None);
    assert_eq!(osv(Ecosystem::Debian, ""), None);
    assert_eq!(osv(Ecosystem::Debian, "::"), None);
}

#[test]
fn match_keys_and_names() {
    let p = |eco, name: &str, version: &str, source: Option<(&str, &str)>| Package {
        ecosystem: eco,
        name: name.into(),
        version: version.into(),
        source_name: source.map(|s| s.0.into()),
        source_version: source.map(|s| s.1.into()),
        arch: None,
        purl: String::new(),
        path: String::new(),
        layer: None,
        evidence: Default::default(),
    };
    let key = |p: &Package| {
        let (n, v) = p.ecosystem.row().match_key.name_version(p);
        (n.into_owned(), v.to_owned())
    };
    let deb = p(
        Ecosystem::Debian,
        "libssl3",
        "3.0.11-1",
        Some(("openssl", "3.0.11-1")),
    );
    assert_eq!(key(&deb), ("openssl".into(), "3.0.11-1".into()));
    let rpm = p(
        Ecosystem::RedHat,
        "openssl-libs",
        "1:3.0.7-27.el9",
        Some(("openssl", "3.0.7-27.el9")),
    );
    assert_eq!(key(&rpm), ("openssl-libs".into(), "1:3.0.7-27.el9".into()));
    let go = p(Ecosystem::Go, "stdlib", "go1.21.3", None);
    assert_eq!(key(&go), ("stdlib".into(), "1.21.3".into()));
    let gomod = p(Ecosystem::Go, "golang.org/x/net", "v0.17.0", None);
    assert_eq!(key(&gomod), ("golang.org/x/net".into(), "v0.17.0".into()));
    let py = p(Ecosystem::PyPI, "Foo.Bar__baz", "1.0", None);
    assert_eq!(key(&py), ("foo-bar-baz".into(), "1.0".into()));

    assert_eq!(
        Ecosystem::PyPI.normalise_name("Foo.Bar__baz-_-Qux"),
        "foo-bar-baz-qux"
    );
    assert_eq!(Ecosystem::PyPI.normalise_name("a--b"), "a-b");
    assert_eq!(Ecosystem::Npm.normalise_name("Foo_Bar"), "Foo_Bar");
    assert_eq!(
        Ecosystem::NuGet.normalise_name("Newtonsoft.Json"),
        "newtonsoft.json"
    );
    assert_eq!(
        Ecosystem::Packagist.normalise_name("Laravel/Framework"),
        "laravel/framework"
    );
    assert_eq!(Ecosystem::Maven.normalise_name("Org.X:Y"), "Org.X:Y");
}
