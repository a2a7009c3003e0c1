//! A Redis of the test's own, so stopping it disturbs no other test.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct PrivateRedis {
    child: Child,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind a loopback port to pick one for Redis")
            .local_addr()
            .expect("the picked port")
            .port();
        let child = spawn(port);
        wait_listening(port, 100);
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (no save, no goodbye), as a crash or a lost host would.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, empty, on the same port (so clients configured with
    /// `url()` reconnect by themselves).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port);
        assert!(
            wait_listening(self.port, 250),
            "redis-server did not listen again on 127.0.0.1:{} within 5s",
            self.port
        );
    }
}

fn spawn(port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/services installs it)")
}

/// Polls every 20 ms, `tries` times; whether it answered.
fn wait_listening(port: u16, tries: u32) -> bool {
    for _ in 0..tries {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
