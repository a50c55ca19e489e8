//! Running kubectl with the chosen context and namespace, and turning its errors into one line.

use std::path::PathBuf;

use super::TransportError;

#[derive(Debug, Clone)]
pub struct Kubectl {
    context: Option<String>,
    namespace: String,
}

impl Kubectl {
    pub fn new(context: Option<String>, namespace: String) -> Self {
        Kubectl { context, namespace }
    }

    /// `kubectl [--context C] -n NS <args>`, or an error when kubectl is not installed.
    pub fn command(&self, args: &[&str]) -> Result<tokio::process::Command, TransportError> {
        let program = find_in_path("kubectl").ok_or_else(|| {
            TransportError::Kubectl(
                "kubectl not found in PATH: install kubectl, or set --orchestrator-url/--router-url and use --transport http"
                    .into(),
            )
        })?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(self.args(args)).kill_on_drop(true);
        Ok(cmd)
    }

    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = Vec::new();
        if let Some(c) = &self.context {
            all.extend(["--context".to_owned(), c.clone()]);
        }
        all.extend(["-n".to_owned(), self.namespace.clone()]);
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// One line from kubectl's stderr for a failed `what` on `kind/name`,
    /// e.g. `deployment orchestrator not found in namespace tenants (context prod)`.
    pub fn explain(&self, what: &str, kind: &str, name: &str, stderr: &str) -> String {
        let place = match &self.context {
            Some(c) => format!("namespace {} (context {c})", self.namespace),
            None => format!("namespace {}", self.namespace),
        };
        if stderr.contains("NotFound") || stderr.contains("not found") {
            return format!("{kind} {name} not found in {place}");
        }
        let line = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no error output");
        format!("kubectl {what} {kind}/{name} in {place} failed: {line}")
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_carry_context_and_namespace() {
        let k = Kubectl::new(Some("prod".into()), "tenants".into());
        assert_eq!(
            k.args(&["exec", "deploy/orchestrator"]),
            [
                "--context",
                "prod",
                "-n",
                "tenants",
                "exec",
                "deploy/orchestrator"
            ]
        );
        let k = Kubectl::new(None, "ns".into());
        assert_eq!(k.args(&["get"]), ["-n", "ns", "get"]);
    }

    #[test]
    fn explains_missing_objects() {
        let k = Kubectl::new(Some("prod".into()), "tenants".into());
        assert_eq!(
            k.explain(
                "exec",
                "deployment",
                "orchestrator",
                "Error from server (NotFound): deployments.apps \"orchestrator\" not found\n"
            ),
            "deployment orchestrator not found in namespace tenants (context prod)"
        );
        assert_eq!(
            k.explain("port-forward", "service", "router", "error: boom\n"),
            "kubectl port-forward service/router in namespace tenants (context prod) failed: error: boom"
        );
    }
}
