//! A pod's network, as a node gives one to a Kubernetes pod: a network
//! namespace with its own `eth0` (one end of a veth pair whose other end is on
//! the mesh bridge), an IP from the bridge's subnet, a default route through the
//! bridge, and an `/etc/hosts` naming the mesh's services by their virtual IPs
//! (`ip netns exec` mounts `/etc/netns/NAME/hosts` over `/etc/hosts`), since
//! there is no cluster DNS.
//!
//! Everything is done with iproute2 (`ip`), as root. Pod IPs are leased with
//! one file per address under `/run/mizzen/leases/BRIDGE` (created
//! exclusively, so two `mizzen run`s never take the same one), holding the
//! leaseholder's pid; a lease whose process is gone is stale and reused.
//! Dropping a [`Netns`] deletes the namespace (and with it the veth pair) and
//! its hosts file; dropping a [`Lease`] frees the address.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::PodError;

/// The mesh's bridge and subnet: the host's end is the gateway, where the
/// control plane listens for pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The bridge's interface name (at most 15 bytes).
    pub bridge: String,
    /// The bridge's (the host's) address in the subnet.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length (8 to 30).
    pub prefix: u8,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            bridge: "mizzen0".to_string(),
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            prefix: 16,
        }
    }
}

/// Runs `ip ARGS`; its stdout, or an error naming the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String, PodError> {
    run(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
}

/// Runs `cmd`, described as `what` in errors.
pub fn run(cmd: &mut Command, what: &str) -> Result<String, PodError> {
    let out = cmd.output().map_err(|e| PodError::Command {
        command: what.to_string(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "not installed (apt-get install iproute2 iptables util-linux)".to_string()
        } else {
            e.to_string()
        },
    })?;
    if !out.status.success() {
        return Err(PodError::Command {
            command: what.to_string(),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Network {
    /// The network namespace of the pod `name` in `namespace` on this bridge.
    pub fn netns_name(&self, namespace: &str, name: &str) -> String {
        format!("{}-{namespace}-{name}", self.bridge)
    }

    /// The subnet's first address.
    fn base(&self) -> u32 {
        u32::from(self.gateway) & (u32::MAX << (32 - u32::from(self.prefix)))
    }

    /// Checks the values: a bridge name `ip` takes, a prefix that leaves room.
    pub fn check(&self) -> Result<(), PodError> {
        if self.bridge.is_empty() || self.bridge.len() > 15 || self.bridge.contains(['/', ' ']) {
            return Err(PodError::Flags(format!(
                "--bridge {:?}: an interface name is 1 to 15 characters without '/' or spaces",
                self.bridge
            )));
        }
        if !(8..=30).contains(&self.prefix) {
            return Err(PodError::Flags(format!(
                "--subnet prefix /{}: use /8 to /30",
                self.prefix
            )));
        }
        Ok(())
    }

    /// Creates the bridge with the gateway address, unless it is there; brings
    /// it up.
    pub fn ensure_bridge(&self) -> Result<(), PodError> {
        self.check()?;
        let cidr = format!("{}/{}", self.gateway, self.prefix);
        if ip(&["link", "show", "dev", &self.bridge]).is_err() {
            ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        }
        let addrs = ip(&["-4", "-o", "addr", "show", "dev", &self.bridge])?;
        if !addrs.contains(&format!(" {cidr} ")) {
            ip(&["addr", "add", &cidr, "dev", &self.bridge])?;
        }
        ip(&["link", "set", &self.bridge, "up"])?;
        Ok(())
    }

    /// Deletes the bridge (its pods' veths go with their namespaces).
    pub fn remove_bridge(&self) -> Result<(), PodError> {
        if ip(&["link", "show", "dev", &self.bridge]).is_ok() {
            ip(&["link", "del", &self.bridge])?;
        }
        Ok(())
    }

    /// Where this bridge's address leases are kept:
    /// `/run/mizzen/leases/BRIDGE`.
    pub fn lease_dir(&self) -> PathBuf {
        Path::new(super::RUN_DIR).join("leases").join(&self.bridge)
    }

    /// Leases a free pod address for this process, in `dir`.
    pub fn lease(&self, dir: &Path) -> Result<Lease, PodError> {
        std::fs::create_dir_all(dir).map_err(|e| PodError::io(dir, e))?;
        let hosts = (1u32 << (32 - u32::from(self.prefix))) - 2;
        for offset in 1..=hosts {
            let addr = Ipv4Addr::from(self.base() + offset);
            if addr == self.gateway {
                continue;
            }
            let path = dir.join(addr.to_string());
            if let Ok(holder) = std::fs::read_to_string(&path)
                && !process_exists(holder.trim())
            {
                // Its holder died without releasing it.
                let _ = std::fs::remove_file(&path);
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(std::process::id().to_string().as_bytes())
                        .map_err(|e| PodError::io(&path, e))?;
                    return Ok(Lease { addr, path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(PodError::io(&path, e)),
            }
        }
        Err(PodError::Flags(format!(
            "every address of {}/{} is taken; stop a pod or use a larger --subnet",
            Ipv4Addr::from(self.base()),
            self.prefix
        )))
    }

    /// Creates the namespace `name` at `addr`, wired to the bridge, with `hosts`
    /// as its `/etc/hosts`.
    pub fn create_netns(&self, name: &str, addr: Ipv4Addr, hosts: &str) -> Result<Netns, PodError> {
        if netns_exists(name) {
            return Err(PodError::Flags(format!(
                "the network namespace {name} exists: is the pod already running? Stop it, or delete a leftover with `ip netns del {name}`"
            )));
        }
        let etc = Path::new("/etc/netns").join(name);
        std::fs::create_dir_all(&etc).map_err(|e| PodError::io(&etc, e))?;
        let hosts_file = etc.join("hosts");
        std::fs::write(&hosts_file, hosts).map_err(|e| PodError::io(&hosts_file, e))?;
        ip(&["netns", "add", name])?;
        // From here on, dropping the value undoes everything.
        let netns = Netns {
            name: name.to_string(),
            etc,
        };
        let host_end = host_veth(name);
        let _ = ip(&["link", "del", &host_end]);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", name,
        ])?;
        ip(&["link", "set", &host_end, "master", &self.bridge, "up"])?;
        let cidr = format!("{addr}/{}", self.prefix);
        netns.ip(&["link", "set", "eth0", "address", &pod_mac(addr)])?;
        netns.ip(&["addr", "add", &cidr, "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&["link", "set", "lo", "up"])?;
        netns.ip(&["route", "add", "default", "via", &self.gateway.to_string()])?;
        Ok(netns)
    }
}

/// A pod's MAC address, from its IP (`02:42` and the address's four bytes, a
/// locally administered unicast address, as Docker gives containers): a pod
/// that reuses a gone pod's address reuses its MAC too, so the neighbours'
/// ARP caches stay right. With a fresh MAC, the other pods would keep sending
/// to the gone pod's for as long as their cache entries live, and the first
/// connections to the new pod would time out.
pub fn pod_mac(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The host end of a pod's veth pair: `mz` and a hash of the namespace's name
/// (interface names are at most 15 bytes; pods of different bridges may share
/// an address, never a namespace name).
fn host_veth(netns: &str) -> String {
    // FNV-1a, 32 bits.
    let hash = netns.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("mz{hash:08x}")
}

/// Whether the process `pid` exists.
fn process_exists(pid: &str) -> bool {
    pid.parse::<u32>()
        .is_ok_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
}

/// Whether `/run/netns/NAME` exists.
fn netns_exists(name: &str) -> bool {
    !name.is_empty() && Path::new("/run/netns").join(name).exists()
}

/// A leased pod address; freed on drop.
#[derive(Debug)]
pub struct Lease {
    /// The address.
    pub addr: Ipv4Addr,
    path: PathBuf,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A pod's network namespace; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns` and `/run/netns/NAME`).
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String, PodError> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs it, so the child is the program itself), as `user` when given.
    pub fn command(&self, user: Option<RunAs>, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        match user {
            Some(RunAs::User(id)) => {
                cmd.arg("setpriv")
                    .arg(format!("--reuid={id}"))
                    .arg(format!("--regid={id}"))
                    .arg("--clear-groups");
            }
            Some(RunAs::Group(id)) => {
                cmd.arg("setpriv")
                    .arg(format!("--regid={id}"))
                    .arg("--clear-groups");
            }
            None => {}
        }
        cmd.arg(program);
        cmd
    }
}

/// Where a pod's processes run: inside its network namespace, or on the
/// host's network (a pod without capture, on a loopback address).
#[derive(Debug)]
pub enum Place {
    /// The pod's own namespace.
    Netns(Netns),
    /// The host's network, as the invoking user.
    Host,
}

impl Place {
    /// A command that runs `program` there (as `user` inside a namespace; on
    /// the host, as whoever runs `mizzen`).
    pub fn command(&self, user: Option<RunAs>, program: &Path) -> Command {
        match self {
            Place::Netns(netns) => netns.command(user, program),
            Place::Host => Command::new(program),
        }
    }

    /// The namespace, if the pod has one.
    pub fn netns(&self) -> Option<&Netns> {
        match self {
            Place::Netns(netns) => Some(netns),
            Place::Host => None,
        }
    }
}

/// The address a pod without capture reaches other services at: its
/// sidecar's egress listeners, on the pod's address with the second octet one
/// up (127.77.0.5 → 127.78.0.5), so they never collide with its inbound
/// listeners on the pod's own address.
pub fn egress_addr(pod: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, d] = pod.octets();
    Ipv4Addr::new(a, b.wrapping_add(1), c, d)
}

/// Who a pod's process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// This uid, and the gid of the same number.
    User(u32),
    /// Root's uid with this gid: for a binary only root may execute (Envoy
    /// installed under /root by pip). The capture exempts the proxy's gid as
    /// well as its uid, as istio-iptables does.
    Group(u32),
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// An `/etc/hosts` for a pod: localhost, the pod's own name, and every
/// service with a virtual IP by its short name (in the pod's namespace),
/// `name.namespace`, `name.namespace.svc` and its full hostname.
pub fn hosts_file(pod: &str, addr: Ipv4Addr, namespace: &str, services: &[ServiceName]) -> String {
    let mut out = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{addr}\t{pod}\n");
    for svc in services {
        let mut names = Vec::new();
        if svc.namespace == namespace {
            names.push(svc.name.clone());
        }
        names.push(format!("{}.{}", svc.name, svc.namespace));
        names.push(format!("{}.{}.svc", svc.name, svc.namespace));
        names.push(svc.hostname.clone());
        names.dedup();
        let _ = writeln!(out, "{}\t{}", svc.address, names.join(" "));
    }
    out
}

/// A service's names and virtual IP, for [`hosts_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// `reviews`.
    pub name: String,
    /// `default`.
    pub namespace: String,
    /// `reviews.default.svc.cluster.local`.
    pub hostname: String,
    /// The virtual IP.
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_mac_follows_its_address() {
        assert_eq!(pod_mac(Ipv4Addr::new(10, 77, 0, 10)), "02:42:0a:4d:00:0a");
        assert_ne!(
            pod_mac(Ipv4Addr::new(10, 77, 0, 10)),
            pod_mac(Ipv4Addr::new(10, 77, 1, 10))
        );
    }

    #[test]
    fn leases_are_exclusive_and_stale_ones_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let net = Network {
            bridge: "mzt".into(),
            gateway: Ipv4Addr::new(10, 99, 0, 1),
            prefix: 29,
        };
        let a = net.lease(dir.path()).unwrap();
        let b = net.lease(dir.path()).unwrap();
        assert_eq!(
            a.addr,
            Ipv4Addr::new(10, 99, 0, 2),
            "the gateway is skipped"
        );
        assert_eq!(b.addr, Ipv4Addr::new(10, 99, 0, 3));
        // A lease held by a process that is gone is stale.
        std::fs::write(dir.path().join("10.99.0.4"), "999999999").unwrap();
        assert_eq!(
            net.lease(dir.path()).unwrap().addr,
            Ipv4Addr::new(10, 99, 0, 4)
        );
        drop(a);
        assert_eq!(
            net.lease(dir.path()).unwrap().addr,
            Ipv4Addr::new(10, 99, 0, 2)
        );
        assert!(
            Network {
                prefix: 31,
                ..net.clone()
            }
            .check()
            .is_err()
        );
        assert!(
            Network {
                bridge: "a-very-long-bridge-name".into(),
                ..net
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn veth_names_fit_and_differ_per_namespace() {
        let a = host_veth("mze-proxy-default-ratings-v1");
        let b = host_veth("mze-envoy-default-ratings-v1");
        assert_ne!(a, b);
        assert!(a.len() <= 15 && a.starts_with("mz"), "{a}");
    }

    #[test]
    fn the_hosts_file_names_services_as_cluster_dns_would() {
        let svc = |name: &str, ns: &str, addr: &str| ServiceName {
            name: name.into(),
            namespace: ns.into(),
            hostname: format!("{name}.{ns}.svc.cluster.local"),
            address: addr.into(),
        };
        let hosts = hosts_file(
            "productpage-v1",
            Ipv4Addr::new(10, 77, 0, 2),
            "default",
            &[
                svc("reviews", "default", "10.96.0.12"),
                svc("db", "data", "10.96.0.40"),
            ],
        );
        assert!(hosts.contains("10.77.0.2\tproductpage-v1\n"), "{hosts}");
        assert!(
            hosts.contains("10.96.0.12\treviews reviews.default reviews.default.svc reviews.default.svc.cluster.local\n"),
            "{hosts}"
        );
        assert!(hosts.contains("10.96.0.40\tdb.data db.data.svc"), "{hosts}");
    }
}

/// A connection request to a [`Dialer`]'s thread, and where its answer goes.
type DialRequest = (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<std::io::Result<std::net::TcpStream>>,
);

/// Opens TCP connections from inside a pod's network namespace, as the pod's
/// app would (`kubectl exec POD -- curl`): a thread that joined the namespace
/// connects on request. A socket stays in the namespace it was made in, so
/// the caller uses it from any thread; its traffic is the pod's, captured by
/// the pod's sidecar. The thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Dialer {
    requests: std::sync::mpsc::Sender<DialRequest>,
    netns: String,
}

impl Dialer {
    /// A dialer inside the namespace `netns` (`/run/netns/NAME`).
    pub fn new(netns: &str) -> Result<Dialer, PodError> {
        use std::os::fd::AsFd;
        let path = Path::new("/run/netns").join(netns);
        let file = std::fs::File::open(&path).map_err(|e| PodError::io(&path, e))?;
        let (requests, incoming) = std::sync::mpsc::channel::<DialRequest>();
        let (joined_tx, joined_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("dial {netns}"))
            .spawn(move || {
                let joined = rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                );
                let ok = joined.is_ok();
                let _ = joined_tx.send(joined);
                if !ok {
                    return;
                }
                for (addr, reply) in incoming {
                    let stream = std::net::TcpStream::connect_timeout(
                        &addr,
                        std::time::Duration::from_secs(5),
                    );
                    let _ = reply.send(stream);
                }
            })
            .map_err(|e| PodError::io(&path, e))?;
        match joined_rx.recv() {
            Ok(Ok(())) => Ok(Dialer {
                requests,
                netns: netns.to_string(),
            }),
            Ok(Err(e)) => Err(PodError::io(&path, e.into())),
            Err(_) => Err(PodError::io(
                &path,
                std::io::Error::other("the dialing thread ended before joining the namespace"),
            )),
        }
    }

    /// `name`'s address as the pod resolves it: from its `/etc/hosts`
    /// (`/etc/netns/NAME/hosts`), which names every service by its VIP.
    pub fn resolve(&self, name: &str) -> Option<Ipv4Addr> {
        let hosts =
            std::fs::read_to_string(Path::new("/etc/netns").join(&self.netns).join("hosts"))
                .ok()?;
        hosts.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            let addr = words.next()?.parse().ok()?;
            words.any(|w| w == name).then_some(addr)
        })
    }

    /// A connection to `addr` made inside the namespace.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || std::io::Error::other(format!("the dialer in {} stopped", self.netns));
        self.requests.send((addr, reply)).map_err(|_| gone())?;
        let stream = answer.await.map_err(|_| gone())??;
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        tokio::net::TcpStream::from_std(stream)
    }
}
