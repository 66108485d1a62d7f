//! Real message brokers for the log hook tests: Debian's `nats-server` (with JetStream)
//! and `rabbitmq-server`, each started on a free port in its own directory and stopped
//! when dropped. Where the package is not installed, `start` says so and returns None
//! (CI installs both).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_port(port: u16, timeout: Duration, what: &str, log: &Path) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} never listened on {port}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn installed(binary: &str, package: &str) -> bool {
    if Path::new(binary).exists() {
        return true;
    }
    eprintln!("SKIPPED: {binary} is not installed (apt-get install {package})");
    false
}

/// A process group, killed when dropped.
pub struct Group(pub Child);

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// A `nats-server -js` on a free port.
pub struct Nats {
    pub port: u16,
    pub dir: PathBuf,
    server: Option<Group>,
}

impl Nats {
    pub fn start(dir: &Path) -> Option<Nats> {
        if !installed("/usr/sbin/nats-server", "nats-server") && !installed("/usr/bin/nats-server", "nats-server") {
            return None;
        }
        let mut n = Nats { port: free_port(), dir: dir.to_path_buf(), server: None };
        n.restart();
        Some(n)
    }

    /// Starts it (again, on the same port and store).
    pub fn restart(&mut self) {
        let log = self.dir.join("nats.log");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.join("store"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("nats-server starts");
        self.server = Some(Group(child));
        wait_port(self.port, Duration::from_secs(20), "nats-server", &log);
    }

    /// Stops it (kill -9).
    pub fn stop(&mut self) {
        self.server = None;
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A `rabbitmq-server` node of its own (node name, ports, data and logs in `dir`).
pub struct RabbitMq {
    pub port: u16,
    _server: Group,
}

impl RabbitMq {
    pub fn start(dir: &Path) -> Option<RabbitMq> {
        // the script under /usr/lib runs as the caller; /usr/sbin's switches to the
        // rabbitmq user, which cannot write a test's directory
        let script = "/usr/lib/rabbitmq/bin/rabbitmq-server";
        if !installed(script, "rabbitmq-server") {
            return None;
        }
        let port = free_port();
        std::fs::write(dir.join("enabled_plugins"), "[].").unwrap();
        let log = dir.join("rabbitmq.out");
        let child = Command::new(script)
            .env("HOME", dir)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_NODENAME", format!("wasmta{port}@localhost"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", dir.join("feature_flags"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("rabbitmq-server starts");
        let server = Group(child);
        wait_port(port, Duration::from_secs(90), "rabbitmq-server", &log);
        Some(RabbitMq { port, _server: server })
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}
