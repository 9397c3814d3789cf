//! The application analysers that read whole files: python (METADATA,
//! PKG-INFO, `.egg-info`), ruby (gemspecs, `Gemfile.lock`), php (Composer
//! `installed.json`, `composer.lock`), dotnet (`*.deps.json`) and cargo
//! (`Cargo.lock`). First byte picks the analyser and path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::analyzers::Analyzer;
use strata_worker::analyzers::{cargo::Cargo, dotnet::Dotnet, php::Php, python::Python, ruby::Ruby};
use strata_worker::fuzzing::analyze_file;

const FILES: &[(&dyn Analyzer, &str)] = &[
    (&Python, "/usr/lib/python3/site-packages/a-1.0.dist-info/METADATA"),
    (&Python, "/usr/lib/python3/site-packages/a-1.0.egg-info/PKG-INFO"),
    (&Python, "/usr/lib/python3/site-packages/a-1.0.egg-info"),
    (&Ruby, "/usr/lib/ruby/gems/3.1.0/specifications/a-1.0.gemspec"),
    (&Ruby, "/app/Gemfile.lock"),
    (&Php, "/app/vendor/composer/installed.json"),
    (&Php, "/app/composer.lock"),
    (&Dotnet, "/app/App.deps.json"),
    (&Cargo, "/src/app/Cargo.lock"),
];

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, FILES.len()) else {
        return;
    };
    let (analyzer, path) = FILES[which];
    let _ = analyze_file(analyzer, path, rest);
});
