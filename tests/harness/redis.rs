//! Real Redis for the fleet tests: Debian's `redis-server`, one server or a three-master
//! cluster, on free ports in the test's directory, stopped when dropped. Where the package
//! is not installed, `start` says so and returns None (CI installs it).

use super::brokers::{Group, free_port, installed, wait_port};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SERVER: &str = "/usr/bin/redis-server";

/// One `redis-server` (no persistence unless `restart` keeps it running).
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    server: Option<Group>,
}

fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Group {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join(format!("redis-{port}.log"));
    let child = Command::new(SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("redis-server starts");
    let g = Group(child);
    wait_port(port, Duration::from_secs(20), "redis-server", &log);
    g
}

impl Redis {
    pub fn start(dir: &Path) -> Option<Redis> {
        if !installed(SERVER, "redis-server") {
            return None;
        }
        let port = free_port();
        let dir = dir.join("redis");
        let server = Some(spawn(&dir, port, &[]));
        Some(Redis { port, dir, server })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server holds its connections and its data but answers nothing.
    pub fn pause(&self) {
        let pid = self.server.as_ref().unwrap().0.id() as i32;
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        let pid = self.server.as_ref().unwrap().0.id() as i32;
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }

    /// Kills it (its data goes: no persistence); connections are refused.
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Kills it (if running) and starts a fresh one on the same port.
    pub fn restart_empty(&mut self) {
        self.server = None;
        self.server = Some(spawn(&self.dir, self.port, &[]));
    }

    /// `redis-cli` against it.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Three masters, no replicas, slots spread by `redis-cli --cluster create`.
pub struct Cluster {
    pub ports: Vec<u16>,
    _servers: Vec<Group>,
}

impl Cluster {
    pub fn start(dir: &Path) -> Option<Cluster> {
        if !installed(SERVER, "redis-server") {
            return None;
        }
        let dir = dir.join("cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers = ports
            .iter()
            .map(|p| {
                let conf = format!("nodes-{p}.conf");
                spawn(&dir, *p, &["--cluster-enabled", "yes", "--cluster-config-file", &conf])
            })
            .collect();
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        // wait until every node sees the whole cluster
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ports.iter().all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok")) {
            assert!(std::time::Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Cluster { ports, _servers: servers })
    }

    /// The `node` list for `configure_redis_throttles`, as Lua.
    pub fn lua_nodes(&self) -> String {
        let urls: Vec<String> = self.ports.iter().map(|p| format!("'redis://127.0.0.1:{p}'")).collect();
        format!("{{ {} }}", urls.join(", "))
    }
}
