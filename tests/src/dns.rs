//! A real DNS server (dnsmasq) on a loopback port, answering for the test
//! domains only: the TXT records it is given (SPF, DMARC, DKIM keys) and
//! NXDOMAIN for every other name under them. Nothing is forwarded.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::process::{
    GroupChild, free_ports, spawn_in_group, start_with_retries, wait_until_ready,
};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// Stops when dropped.
pub struct DnsServer {
    address: SocketAddr,
    _child: GroupChild,
}

impl DnsServer {
    /// Serves `txt` records (name, value) as the authority for `zones`.
    pub async fn start(zones: &[&str], txt: &[(&str, &str)]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: apt-get install dnsmasq-base (cargo xtask test installs it)"
        );
        let zones: Vec<String> = zones.iter().map(|zone| (*zone).to_owned()).collect();
        let txt: Vec<(String, String)> =
            txt.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        start_with_retries(|| {
            let zones = zones.clone();
            let txt = txt.clone();
            async move {
                tokio::task::spawn_blocking(move || Self::start_once(&zones, &txt))
                    .await
                    .context("starting dnsmasq")?
            }
        })
        .await
    }

    fn start_once(zones: &[String], txt: &[(String, String)]) -> anyhow::Result<Self> {
        let [port] = free_ports::<1>()?;
        let mut command = Command::new(DNSMASQ);
        command
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-poll")
            .arg("--bind-interfaces")
            .arg("--listen-address=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--pid-file=")
            .arg("--user=root")
            .arg("--log-facility=-");
        for zone in zones {
            // Authoritative for the zone: unknown names are NXDOMAIN, not forwarded.
            command.arg(format!("--local=/{zone}/"));
        }
        for (name, value) in txt {
            command.arg(format!("--txt-record={name},{value}"));
        }
        let mut child = spawn_in_group(&mut command, Stdio::null(), "cannot start dnsmasq")?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_until_ready(&mut child, "dnsmasq", || TcpStream::connect(address).is_ok())?;
        Ok(Self { address, _child: GroupChild(child) })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}
