//! Lints `docker/*.Dockerfile`: multi-stage, pinned bases, no `latest`, non-root runtime, and the
//! dependency layer built from manifests before any source is copied. No Docker engine is needed;
//! the skeleton script the dependency layer relies on is run for real.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (Dockerfile, cargo package, binary, crate directories whose sources it needs, port it exposes)
const IMAGES: [(&str, &str, &str, &[&str], u16); 4] = [
    (
        "orchestrator",
        "orchestrator",
        "orchestrator",
        &["common", "orchestrator"],
        8080,
    ),
    ("router", "router", "router", &["common", "router"], 9090),
    (
        "tenant-agent",
        "tenant-agent",
        "tenant-agent",
        &["common", "agent"],
        3000,
    ),
    (
        "zeroclaw",
        "zeroclaw-launcher",
        "zeroclaw-launcher",
        &["common", "launcher"],
        3000,
    ),
];
const RUNTIME_IMAGE: &str = "gcr.io/distroless/cc-debian12:nonroot";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Debug, Clone)]
struct Instruction {
    op: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    image: String,
    alias: Option<String>,
    body: Vec<Instruction>,
}

/// Instructions of a Dockerfile: comments dropped, `\` continuations joined, grouped by stage.
fn parse(name: &str) -> Vec<Stage> {
    let path = root().join(format!("docker/{name}.Dockerfile"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "{name}: dangling line continuation");

    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (op, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let ins = Instruction {
            op: op.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        };
        if ins.op == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let alias = match words.as_slice() {
                [_] => None,
                [_, as_, alias] if as_.eq_ignore_ascii_case("as") => Some(alias.to_string()),
                _ => panic!("{name}: cannot read `FROM {}`", ins.args),
            };
            stages.push(Stage {
                image: words[0].to_owned(),
                alias,
                body: Vec::new(),
            });
        } else {
            assert!(
                !stages.is_empty() || ins.op == "ARG",
                "{name}: {} before FROM",
                ins.op
            );
            if let Some(stage) = stages.last_mut() {
                stage.body.push(ins);
            }
        }
    }
    stages
}

/// A tag that names a version (or a digest), not `latest` and not absent.
fn pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    matches!(last.split_once(':'), Some((_, tag)) if !tag.is_empty() && tag != "latest")
}

fn workspace_rust_version() -> (u32, u32) {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version"))
        .expect("workspace rust-version");
    let v = line.split('"').nth(1).unwrap();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn images_are_multi_stage_from_pinned_bases() {
    let (need_major, need_minor) = workspace_rust_version();
    for (file, ..) in IMAGES {
        let stages = parse(file);
        assert!(
            stages.len() >= 2,
            "{file}: a build stage and a runtime stage"
        );
        let mut aliases: Vec<&str> = Vec::new();
        for s in &stages {
            if !aliases.contains(&s.image.as_str()) {
                assert!(
                    pinned(&s.image),
                    "{file}: base image {} is not pinned to a version",
                    s.image
                );
                assert!(
                    !s.image.contains('$'),
                    "{file}: base image {} comes from a variable",
                    s.image
                );
            }
            if let Some(a) = &s.alias {
                aliases.push(a);
            }
        }
        // The builder is a Rust image at least as new as the workspace's rust-version, on the same
        // Debian release as the runtime (glibc must match).
        let builders: Vec<&Stage> = stages
            .iter()
            .filter(|s| s.image.starts_with("rust:"))
            .collect();
        assert!(!builders.is_empty(), "{file}: no rust: build stage");
        for b in builders {
            let tag = b.image.trim_start_matches("rust:");
            assert!(
                tag.ends_with("-bookworm"),
                "{file}: {} is not Debian 12 like {RUNTIME_IMAGE}",
                b.image
            );
            let mut v = tag
                .split('-')
                .next()
                .unwrap()
                .split('.')
                .map(|p| p.parse::<u32>().unwrap());
            let (major, minor) = (v.next().unwrap(), v.next().unwrap_or(0));
            assert!(
                (major, minor) >= (need_major, need_minor),
                "{file}: {} is older than rust-version {need_major}.{need_minor}",
                b.image
            );
        }
        assert_eq!(
            stages.last().unwrap().image,
            RUNTIME_IMAGE,
            "{file}: runtime image"
        );
    }
}

#[test]
fn no_instruction_mentions_latest() {
    for (file, ..) in IMAGES {
        for stage in parse(file) {
            assert!(
                !stage.image.to_ascii_lowercase().contains("latest"),
                "{file}: FROM {}",
                stage.image
            );
            for ins in &stage.body {
                assert!(
                    !ins.args.to_ascii_lowercase().contains(":latest"),
                    "{file}: {} {}",
                    ins.op,
                    ins.args
                );
            }
        }
    }
}

#[test]
fn the_runtime_stage_runs_only_the_binary_as_non_root() {
    for (file, _, bin, _, port) in IMAGES {
        let stages = parse(file);
        let runtime = stages.last().unwrap();
        let users: Vec<&Instruction> = runtime.body.iter().filter(|i| i.op == "USER").collect();
        let user = users
            .last()
            .unwrap_or_else(|| panic!("{file}: the runtime stage sets no USER"));
        let uid: u32 = user
            .args
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "{file}: USER {} is not numeric (runAsNonRoot needs a uid)",
                    user.args
                )
            });
        assert_ne!(uid, 0, "{file}: runs as root");
        assert!(
            users
                .iter()
                .all(|u| !u.args.starts_with("root") && !u.args.starts_with('0')),
            "{file}: switches to root"
        );
        assert!(
            runtime.body.iter().all(|i| i.op != "RUN"),
            "{file}: the distroless stage has no shell to RUN"
        );

        let entry = runtime
            .body
            .iter()
            .rfind(|i| i.op == "ENTRYPOINT")
            .unwrap_or_else(|| panic!("{file}: no ENTRYPOINT"));
        let argv: Vec<String> = serde_json::from_str(&entry.args)
            .unwrap_or_else(|_| panic!("{file}: ENTRYPOINT must be the exec (JSON) form"));
        assert_eq!(argv, vec![format!("/usr/local/bin/{bin}")], "{file}");
        let copies_binary = runtime.body.iter().any(|i| {
            i.op == "COPY"
                && i.args.starts_with("--from=")
                && i.args.ends_with(&format!("/usr/local/bin/{bin}"))
        });
        assert!(
            copies_binary,
            "{file}: the binary is copied from the build stage"
        );
        let expose = runtime
            .body
            .iter()
            .find(|i| i.op == "EXPOSE")
            .map(|i| i.args.clone());
        assert_eq!(expose, Some(port.to_string()), "{file}: EXPOSE");
    }
}

#[test]
fn dependencies_build_in_a_layer_before_the_sources_arrive() {
    for (file, package, bin, crates, _) in IMAGES {
        let stages = parse(file);
        let builder = stages
            .iter()
            .find(|s| {
                s.body
                    .iter()
                    .any(|i| i.op == "RUN" && i.args.contains("cargo build"))
            })
            .unwrap_or_else(|| panic!("{file}: no stage runs cargo build"));
        let body = &builder.body;
        let builds: Vec<usize> = (0..body.len())
            .filter(|&i| body[i].op == "RUN" && body[i].args.contains("cargo build"))
            .collect();
        assert_eq!(
            builds.len(),
            2,
            "{file}: one build of the dependencies, one of the sources"
        );
        for &i in &builds {
            let args = &body[i].args;
            for flag in [
                "--release",
                "--locked",
                &format!("-p {package}"),
                &format!("--bin {bin}"),
            ] {
                assert!(args.contains(flag), "{file}: `{args}` lacks {flag}");
            }
            assert!(
                !args.contains("--all-features") && !args.contains("--workspace"),
                "{file}: {args}"
            );
        }

        // Before the first build: only the manifests skeleton (or Cargo.toml / Cargo.lock files).
        for ins in body[..builds[0]]
            .iter()
            .filter(|i| i.op == "COPY" || i.op == "ADD")
        {
            let manifests_only = ins.args.starts_with("--from=skeleton ")
                || ins
                    .args
                    .split_whitespace()
                    .rev()
                    .skip(1)
                    .all(|src| src.ends_with("Cargo.toml") || src.ends_with("Cargo.lock"));
            assert!(
                manifests_only,
                "{file}: `{} {}` copies sources before the dependency build",
                ins.op, ins.args
            );
        }
        // Between the builds: exactly the crates this binary needs, never the whole context.
        let copied: Vec<String> = body[builds[0]..builds[1]]
            .iter()
            .filter(|i| i.op == "COPY")
            .map(|i| {
                let words: Vec<&str> = i.args.split_whitespace().collect();
                assert_eq!(words.len(), 2, "{file}: COPY {}", i.args);
                assert_eq!(
                    words[0], words[1],
                    "{file}: COPY {} changes the layout",
                    i.args
                );
                words[0].trim_end_matches('/').to_owned()
            })
            .collect();
        assert_eq!(copied, crates, "{file}: sources copied for the build");
        assert!(
            body[builds[1]].args.contains("touch"),
            "{file}: copied sources must be touched, or cargo may keep the empty targets (COPY keeps old mtimes)"
        );
        // The package's path dependencies are all copied.
        let manifest =
            std::fs::read_to_string(root().join(crates.last().unwrap()).join("Cargo.toml"))
                .unwrap();
        if manifest
            .lines()
            .any(|l| l.trim_start().starts_with("common"))
        {
            assert!(crates.contains(&"common"), "{file}: depends on common");
        }

        // The skeleton stage exists and only it sees the whole context.
        if body[..builds[0]]
            .iter()
            .any(|i| i.args.starts_with("--from=skeleton "))
        {
            let skeleton = stages
                .iter()
                .find(|s| s.alias.as_deref() == Some("skeleton"))
                .expect("skeleton stage");
            assert!(skeleton
                .body
                .iter()
                .any(|i| i.op == "RUN" && i.args.contains("docker/skeleton.sh /skeleton")));
        }
        for s in &stages {
            if s.alias.as_deref() != Some("skeleton") {
                assert!(
                    s.body
                        .iter()
                        .all(|i| !(i.op == "COPY" && i.args.starts_with(". "))),
                    "{file}: only the skeleton stage may copy the whole context"
                );
            }
        }
    }
}

#[test]
fn every_dockerfile_has_an_ignore_file_that_keeps_build_output_out() {
    for (file, ..) in IMAGES {
        let path = root().join(format!("docker/{file}.Dockerfile.dockerignore"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for must in ["target/", ".git/"] {
            assert!(
                lines.contains(&must),
                "{}: does not ignore {must}",
                path.display()
            );
        }
        for keep in ["Cargo.lock", "*.rs", "docker/"] {
            assert!(!lines.contains(&keep), "{}: ignores {keep}", path.display());
        }
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn metadata(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (package name, [(target kind, target name)]) of every workspace member (path package), sorted.
fn members(meta: &serde_json::Value) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<_> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| {
            let mut targets: Vec<(String, String)> = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["kind"][0].as_str().unwrap().to_owned(),
                        t["name"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            targets.sort();
            (p["name"].as_str().unwrap().to_owned(), targets)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_skeleton_is_a_workspace_cargo_accepts_with_the_same_lock_file() {
    let out = tempfile::tempdir().unwrap();
    let skeleton = out.path().join("skeleton");
    let status = Command::new("sh")
        .arg("docker/skeleton.sh")
        .arg(&skeleton)
        .current_dir(root())
        .status()
        .expect("run sh");
    assert!(status.success(), "docker/skeleton.sh failed");

    // Only manifests, the lock file and (empty) Rust targets: a source edit cannot change it.
    let mut files = Vec::new();
    let mut stack = vec![skeleton.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            name == "Cargo.toml" || name == "Cargo.lock" || name.ends_with(".rs"),
            "{}",
            f.display()
        );
        if name.ends_with(".rs") {
            let body = std::fs::read_to_string(f).unwrap();
            assert!(
                body.is_empty() || body.trim() == "fn main() {}",
                "{}: {body}",
                f.display()
            );
        }
    }
    assert_eq!(
        std::fs::read(skeleton.join("Cargo.lock")).unwrap(),
        std::fs::read(root().join("Cargo.lock")).unwrap()
    );

    // Cargo resolves it with `--locked` (the lock file needs no change, so the dependency build
    // compiles the very graph of the real build), with the same members and the binaries to build.
    let real = members(&metadata(&root(), &["--no-deps"]));
    let skel = members(&metadata(&skeleton, &["--locked"]));
    assert_eq!(
        real.iter().map(|m| &m.0).collect::<Vec<_>>(),
        skel.iter().map(|m| &m.0).collect::<Vec<_>>(),
        "workspace members"
    );
    for (file, package, bin, ..) in IMAGES {
        let targets = &skel.iter().find(|m| m.0 == package).unwrap().1;
        assert!(
            targets.contains(&("bin".into(), bin.into())),
            "{file}: skeleton has no bin {bin}: {targets:?}"
        );
    }
}

/// The one ZeroClaw version the project runs: `ZEROCLAW_VERSION` in scripts/ensure-zeroclaw.sh.
fn pinned_zeroclaw_version() -> String {
    let script = std::fs::read_to_string(root().join("scripts/ensure-zeroclaw.sh")).unwrap();
    let line = script
        .lines()
        .find(|l| l.starts_with("ZEROCLAW_VERSION="))
        .expect("ZEROCLAW_VERSION= in scripts/ensure-zeroclaw.sh");
    line.split('"').nth(1).unwrap_or(line).to_owned()
}

#[test]
fn the_zeroclaw_image_installs_the_pinned_release_and_runs_it_through_the_launcher() {
    let version = pinned_zeroclaw_version();
    let stages = parse("zeroclaw");
    let install = stages
        .iter()
        .find(|s| {
            s.body
                .iter()
                .any(|i| i.op == "RUN" && i.args.contains("cargo install zeroclaw"))
        })
        .expect("a stage runs `cargo install zeroclaw`");
    assert!(
        install
            .body
            .iter()
            .all(|i| !(i.op == "COPY" || i.op == "ADD")),
        "the ZeroClaw stage takes nothing from the context (its layer must not change with it)"
    );
    let arg = install
        .body
        .iter()
        .find(|i| i.op == "ARG" && i.args.starts_with("ZEROCLAW_VERSION="))
        .expect("ARG ZEROCLAW_VERSION=");
    assert_eq!(
        arg.args,
        format!("ZEROCLAW_VERSION={version}"),
        "Dockerfile and ensure-zeroclaw.sh pin the same release"
    );
    let run = install
        .body
        .iter()
        .find(|i| i.op == "RUN" && i.args.contains("cargo install zeroclaw"))
        .unwrap();
    for flag in ["--version \"${ZEROCLAW_VERSION}\"", "--locked"] {
        assert!(run.args.contains(flag), "`{}` lacks {flag}", run.args);
    }
    let alias = install
        .alias
        .as_deref()
        .expect("the ZeroClaw stage is named");
    let runtime = stages.last().unwrap();
    assert!(
        runtime.body.iter().any(|i| i.op == "COPY"
            && i.args.starts_with(&format!("--from={alias} "))
            && i.args.ends_with(" /usr/local/bin/zeroclaw")),
        "the runtime holds the installed zeroclaw binary"
    );
    let env: Vec<&str> = runtime
        .body
        .iter()
        .filter(|i| i.op == "ENV")
        .flat_map(|i| i.args.split_whitespace())
        .collect();
    assert!(
        env.contains(&"ZEROCLAW_BIN=/usr/local/bin/zeroclaw"),
        "the launcher finds zeroclaw: {env:?}"
    );
    assert!(env.contains(&"AGENT_PORT=3000"), "{env:?}");
}

#[test]
fn deploy_runs_the_zeroclaw_image_of_this_version() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = text
        .lines()
        .find(|l| l.starts_with("version = "))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_owned();
    let mut found = 0;
    for file in [
        "deploy/base/kustomization.yaml",
        "deploy/overlays/eks/kustomization.yaml",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for line in text.lines().filter(|l| l.contains("ZEROCLAW_IMAGE=")) {
            let image = line
                .split("ZEROCLAW_IMAGE=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            let want = format!("zeroclaw-tenancy/zeroclaw:{version}");
            assert!(
                image == want || image.ends_with(&format!("/{want}")),
                "{file}: ZEROCLAW_IMAGE={image}, not the image of docker/zeroclaw.Dockerfile"
            );
            found += 1;
        }
    }
    assert_eq!(found, 2, "ZEROCLAW_IMAGE in base and eks");
}

#[test]
fn the_linter_catches_what_it_is_for() {
    assert!(pinned("rust:1.95-slim-bookworm") && pinned("gcr.io/distroless/cc-debian12:nonroot"));
    assert!(pinned("registry:5000/img@sha256:abc"));
    for bad in [
        "rust",
        "rust:latest",
        "registry:5000/img",
        "gcr.io/distroless/cc-debian12",
    ] {
        assert!(!pinned(bad), "{bad}");
    }
}
