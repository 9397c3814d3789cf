//! The npm analyser: installed `package.json`, a project's own, and the
//! lockfiles (`package-lock.json`, `yarn.lock`, `pnpm-lock.yaml`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::analyzers::npm::Npm;
use strata_worker::fuzzing::analyze_file;

const PATHS: &[&str] = &[
    "/app/node_modules/@scope/pkg/package.json",
    "/app/package.json",
    "/app/package-lock.json",
    "/app/yarn.lock",
    "/app/pnpm-lock.yaml",
];

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, PATHS.len()) else {
        return;
    };
    let _ = analyze_file(&Npm, PATHS[which], rest);
});
