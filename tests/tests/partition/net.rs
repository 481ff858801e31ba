//! An isolated network of separate hosts on this machine: one network namespace per
//! host, each with one address from the benchmarking range (198.18.0.0/15) on a veth
//! joined to a bridge that has no uplink; the test process reaches them through the
//! bridge's own address. No namespace has a default route, so no packet leaves the
//! machine. Every name carries the test's pid; [`Lab`] removes everything on drop (also
//! when a test fails or panics), after killing the processes it started.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The address the test process has on the bridge.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const PREFIX: &str = "fleet-partition-";

/// Runs `args` (a program and its arguments), returning its standard output, or an error
/// naming the command and what it printed.
pub(crate) fn run(args: &[&str]) -> Result<String, String> {
    run_with_input(args, None)
}

/// Like [`run`], writing `input` to the command's standard input.
pub(crate) fn run_with_input(args: &[&str], input: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("`{}`: stdin: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One host: a namespace, its address, and the root-side end of its veth.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) ns: String,
    pub(crate) addr: Ipv4Addr,
    veth: String,
}

/// The namespaces, the bridge and the processes of one run.
#[derive(Debug)]
pub(crate) struct Lab {
    bridge: String,
    hosts: Vec<Host>,
    children: Mutex<Vec<(String, Child)>>,
}

/// Removes what earlier runs that were killed before cleaning up left behind (names
/// with the pid of a process that no longer exists): their processes, namespaces and
/// bridges.
fn remove_leftovers() {
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(list) = run(&["ip", "netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Some(rest) = name.strip_prefix(PREFIX) {
                let pid = rest.split('-').next().unwrap_or("");
                if !alive(pid) {
                    // Its processes outlived it (a test killed with SIGKILL).
                    for p in run(&["ip", "netns", "pids", name])
                        .unwrap_or_default()
                        .lines()
                    {
                        if let Ok(p) = p.trim().parse::<i32>() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(p),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                    let _ = run(&["ip", "netns", "del", name]);
                }
            }
        }
    }
    if let Ok(list) = run(&["ip", "-o", "link", "show", "type", "bridge"]) {
        for line in list.lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            if let Some(pid) = name.strip_prefix("fpb") {
                if !alive(pid) {
                    let _ = run(&["ip", "link", "del", name]);
                }
            }
        }
    }
}

impl Lab {
    /// Creates the bridge and one namespace per name in `hosts` (addresses 198.18.0.1,
    /// .2, ... in order).
    pub(crate) fn create(hosts: &[&str]) -> Result<Lab, String> {
        remove_leftovers();
        let pid = std::process::id();
        let bridge = format!("fpb{pid}");
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        let mut lab = Lab {
            bridge: bridge.clone(),
            hosts: Vec::new(),
            children: Mutex::default(),
        };
        run(&["ip", "addr", "add", &format!("{CLIENT}/24"), "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            let ns = format!("{PREFIX}{pid}-{name}");
            let veth = format!("fpv{pid}h{i}");
            let addr = Ipv4Addr::new(198, 18, 0, i as u8 + 1);
            run(&["ip", "netns", "add", &ns])?;
            lab.hosts.push(Host {
                ns: ns.clone(),
                addr,
                veth: veth.clone(),
            });
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            run(&["ip", "link", "set", &veth, "master", &bridge])?;
            run(&["ip", "link", "set", &veth, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &ns];
                all.extend_from_slice(args);
                run(&all)
            };
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            inside(&["ip", "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    pub(crate) fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Starts `program` with `args` inside host `i`'s namespace, its output to `log`.
    pub(crate) fn spawn(
        &self,
        i: usize,
        program: &str,
        args: &[String],
        log: &std::path::Path,
    ) -> u32 {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} in {}: {e}", self.hosts[i].ns));
        // `ip netns exec` executes the program in its own place: the pid is the program's.
        let pid = child.id();
        self.children
            .lock()
            .unwrap()
            .push((self.hosts[i].ns.clone(), child));
        pid
    }

    /// Kills the process `pid` (SIGKILL) and reaps it.
    pub(crate) fn kill(&self, pid: u32) {
        let mut children = self.children.lock().unwrap();
        if let Some(at) = children.iter().position(|(_, c)| c.id() == pid) {
            let (_, mut child) = children.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Cuts host `i` off from the hosts at `others` with nftables drop rules in its
    /// namespace (both directions); the test process still reaches it.
    pub(crate) fn partition(&self, i: usize, others: &[Ipv4Addr]) -> Result<(), String> {
        let set = others
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let script = format!(
            "table inet partition {{\n\
               chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
               chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        run_with_input(
            &["ip", "netns", "exec", &self.hosts[i].ns, "nft", "-f", "-"],
            Some(&script),
        )
        .map(drop)
    }

    /// Removes host `i`'s drop rules.
    pub(crate) fn heal(&self, i: usize) -> Result<(), String> {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.hosts[i].ns,
            "nft",
            "delete",
            "table",
            "inet",
            "partition",
        ])
        .map(drop)
    }

    /// Takes host `i`'s link down (it reaches nobody, nobody reaches it) or up again.
    pub(crate) fn link(&self, i: usize, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        run(&["ip", "link", "set", &self.hosts[i].veth, state]).map(drop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, mut child) in children {
            // A paused process is killed all the same (SIGKILL needs no SIGCONT).
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            // Deleting the namespace deletes its veth, and with it the end on the bridge.
            if let Err(e) = run(&["ip", "netns", "del", &host.ns]) {
                eprintln!("partition bench: cleanup: {e}");
            }
            let _ = run(&["ip", "link", "del", &host.veth]);
        }
        if let Err(e) = run(&["ip", "link", "del", &self.bridge]) {
            eprintln!("partition bench: cleanup: {e}");
        }
    }
}
