//! A real nginx reverse proxy with its default upstream settings (`proxy_http_version` 1.0, no
//! keep-alive upstream), in its own temp dir on a free loopback port: config, pid, logs, temp paths.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::platform::free_port;

/// The nginx binary: on PATH, else Debian's `/usr/sbin/nginx`; panics naming the installer.
pub fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .expect("nginx not found: run scripts/ensure-test-deps.sh (apt-get install nginx-light)")
}

/// One nginx process proxying `location /` to an upstream of loopback ports (round robin).
pub struct Nginx {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub async fn start(upstream_ports: &[u16]) -> Nginx {
        Nginx::start_on(free_port(), upstream_ports).await
    }

    /// On a port chosen beforehand (so clients can be configured before nginx runs).
    pub async fn start_on(port: u16, upstream_ports: &[u16]) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("zt-nginx-")
            .tempdir()
            .expect("temp dir");
        let p = |name: &str| dir.path().join(name).display().to_string();
        let servers: String = upstream_ports
            .iter()
            .map(|u| format!("        server 127.0.0.1:{u};\n"))
            .collect();
        // Running as root, workers would switch to `nobody` and lose the temp dir.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\n\
             error_log {err} info;\nevents {{ worker_connections 256; }}\n\
             http {{\n    access_log {access};\n    client_body_temp_path {tmp}/body;\n\
             proxy_temp_path {tmp}/proxy;\n    fastcgi_temp_path {tmp}/fastcgi;\n\
             uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n\
             upstream backends {{\n{servers}    }}\n\
             server {{\n        listen 127.0.0.1:{port};\n        location / {{ proxy_pass http://backends; }}\n    }}\n}}\n",
            pid = p("nginx.pid"),
            err = p("error.log"),
            access = p("access.log"),
            tmp = dir.path().display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(p("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx { port, child, dir };
        n.wait_listening().await;
        n
    }

    async fn wait_listening(&mut self) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            assert!(
                Instant::now() < end,
                "nginx not listening:\n{}",
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// `method uri status` of every request nginx proxied, from its access log.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
