//! Independent judges of what the server sends, run as external programs
//! from Debian packages that `cargo xtask test` installs: Python's dkimpy
//! (python3-dkim), SpamAssassin, and openssl for keys.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// dkimpy's verdict on `email`, with the key record given instead of looked up in DNS.
pub fn dkim_verifies(email: &[u8], txt_record: &str) -> bool {
    let script = "import sys, dkim\n\
                  record = sys.argv[1].encode()\n\
                  ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: record)\n\
                  sys.exit(0 if ok else 1)\n";
    // Debian's interpreter, where python3-dkim is installed (not a pyenv shim).
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script, txt_record])
        .stdin(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (cargo xtask test installs python3-dkim)");
    child.stdin.take().expect("stdin").write_all(email).expect("write the email");
    child.wait().expect("dkimpy finishes").success()
}

/// SpamAssassin's score for `email` with local rules only (no network
/// tests), and its table of the rules that fired.
pub fn spamassassin_score(email: &[u8]) -> (f64, String) {
    let mut child = Command::new("spamassassin")
        .args(["-L", "-t", "-x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spamassassin runs (cargo xtask test installs it)");
    child.stdin.take().expect("stdin").write_all(email).expect("write the email");
    let output = child.wait_with_output().expect("spamassassin finishes");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let score = report
        .lines()
        .find_map(|line| line.strip_prefix("X-Spam-Status: "))
        .and_then(|status| status.split("score=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no score in SpamAssassin's report:\n{report}"));
    let rules = report.split("Content analysis details").nth(1).unwrap_or_default().to_owned();
    (score, rules)
}

/// A fresh 2048-bit RSA private key (PKCS#8 PEM) in `dir`.
pub fn rsa_private_key(dir: &Path) -> PathBuf {
    let path = dir.join("dkim.pem");
    let status = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl genpkey failed");
    path
}
