//! The installers: the Linux packages installed on this machine and
//! uninstalled again (`packages`, as root, with the packages
//! `cargo xtask installers --debug` builds), and the sources of what can
//! only be built on Windows and macOS checked against the policy reader's
//! key list (`templates`), so that they cannot silently rot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use sealpost_agent::policy::{KEYS, KeyKind, PolicyKey};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn installers() -> PathBuf {
    repo().join("installers")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Runs `command`, which must succeed; its standard output.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn policy_key(managed: &str) -> &'static PolicyKey {
    KEYS.iter()
        .find(|key| key.managed == managed)
        .unwrap_or_else(|| panic!("{managed} is not a policy value the agent reads"))
}

fn all_managed_names() -> BTreeSet<&'static str> {
    KEYS.iter().map(|key| key.managed).collect()
}

mod templates {
    use super::*;
    use sealpost_agent::policy::{PREFERENCES_DOMAIN, Policy, REGISTRY_KEY};

    const WIX: &str = "http://schemas.microsoft.com/wix/2006/wi";
    const ADMX: &str = "http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions";

    fn children<'a, 'input>(
        node: roxmltree::Node<'a, 'input>,
        name: (&'static str, &'static str),
    ) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
        node.children().filter(move |child| child.has_tag_name(name))
    }

    fn descendants<'a, 'input>(
        node: roxmltree::Node<'a, 'input>,
        name: (&'static str, &'static str),
    ) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
        node.descendants().filter(move |child| child.has_tag_name(name))
    }

    fn attribute<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
        node.attribute(name).unwrap_or_else(|| {
            panic!("<{}> at {:?} has no {name}", node.tag_name().name(), node.range())
        })
    }

    /// The `[NAME]` references in an MSI formatted value.
    fn bracketed(value: &str) -> Vec<&str> {
        value
            .split('[')
            .skip(1)
            .filter_map(|part| part.split_once(']'))
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn the_deployment_guide_documents_every_policy_key_and_msi_property() {
        let guide = read(&repo().join("docs/deploy-desktop.md"));
        for key in KEYS {
            assert!(guide.contains(&format!("`{}`", key.toml)), "the guide documents {}", key.toml);
            assert!(
                guide.contains(&format!("`{}`", key.managed)),
                "the guide documents {}",
                key.managed
            );
        }
        let wix = read(&installers().join("windows/policy.wxs"));
        let wix = roxmltree::Document::parse(&wix).expect("well-formed");
        for property in descendants(wix.root_element(), (WIX, "Property")) {
            let id = attribute(property, "Id");
            assert!(
                guide.contains(&format!("| `{id}` |")),
                "the guide documents the MSI property {id}"
            );
        }
    }

    #[test]
    fn the_wix_fragment_writes_policy_values_from_declared_public_properties() {
        let text = read(&installers().join("windows/policy.wxs"));
        let document = roxmltree::Document::parse(&text).expect("policy.wxs is well-formed");
        let root = document.root_element();
        assert!(root.has_tag_name((WIX, "Wix")), "a WiX v3 source");

        let properties: BTreeMap<&str, roxmltree::Node> = descendants(root, (WIX, "Property"))
            .map(|node| (attribute(node, "Id"), node))
            .collect();
        for (id, node) in &properties {
            // Only upper-case properties can be given on the msiexec command
            // line, and only Secure ones reach the elevated install.
            assert_eq!(id.to_ascii_uppercase(), *id, "{id} is not a public property");
            assert_eq!(node.attribute("Secure"), Some("yes"), "{id} is not Secure");
        }
        for required in ["SERVERURL", "LOCKSERVER", "AUTOSTART"] {
            assert!(properties.contains_key(required), "the MSI takes {required}");
        }

        let group = descendants(root, (WIX, "ComponentGroup"))
            .find(|group| group.attribute("Id") == Some("SealpostPolicy"))
            .expect("the SealpostPolicy component group");
        let grouped: BTreeSet<&str> =
            children(group, (WIX, "ComponentRef")).map(|node| attribute(node, "Id")).collect();
        let mut components = BTreeSet::new();
        let mut written = BTreeSet::new();
        let mut used_properties = BTreeSet::new();
        for component in descendants(root, (WIX, "Component")) {
            let id = attribute(component, "Id");
            assert!(components.insert(id), "component {id} is declared twice");
            let values: Vec<_> = descendants(component, (WIX, "RegistryValue")).collect();
            assert_eq!(values.len(), 1, "{id} writes one registry value, its key path");
            let value = values[0];
            assert_eq!(
                (value.attribute("Root"), value.attribute("KeyPath")),
                (Some("HKLM"), Some("yes")),
                "{id}"
            );
            let condition = children(component, (WIX, "Condition"))
                .next()
                .and_then(|node| node.text())
                .unwrap_or_else(|| panic!("{id} has no condition"));
            // The property written, or for the login item the one deciding it.
            let written_from: Vec<&str> = bracketed(attribute(value, "Value"))
                .into_iter()
                .filter(|name| *name != "INSTALLDIR")
                .collect();
            let property = match written_from.as_slice() {
                [property] => *property,
                [] => condition
                    .split(|char: char| !char.is_ascii_alphanumeric())
                    .find(|word| properties.contains_key(word))
                    .unwrap_or_else(|| panic!("{id}'s condition names no property")),
                more => panic!("{id} writes several properties: {more:?}"),
            };
            assert!(
                properties.contains_key(property),
                "{id} uses {property}, which is not declared"
            );
            used_properties.insert(property);
            assert!(condition.contains(property), "{id} is written only when {property} is given");

            let key = attribute(value, "Key");
            if key == REGISTRY_KEY {
                let name = attribute(value, "Name");
                let expected = match policy_key(name).kind {
                    KeyKind::Flag | KeyKind::Port => "integer",
                    KeyKind::Text | KeyKind::Choice(_) => "string",
                    KeyKind::List => "multiString",
                };
                assert_eq!(value.attribute("Type"), Some(expected), "{name}'s registry type");
                assert!(written.insert(name), "{name} is written twice");
            } else {
                assert_eq!(key, r"Software\Microsoft\Windows\CurrentVersion\Run", "{id}");
                assert!(attribute(value, "Value").contains("[INSTALLDIR]sealpost.exe"), "{id}");
            }
        }
        assert_eq!(grouped, components, "every component is in SealpostPolicy, and only those");
        let declared: BTreeSet<&str> = properties.keys().copied().collect();
        assert_eq!(used_properties, declared, "every declared property is written");
        assert!(written.contains("ServerUrl") && written.contains("StartAtLogin"));

        let conf: serde_json::Value =
            serde_json::from_str(&read(&repo().join("desktop/app/tauri.conf.json"))).expect("JSON");
        let wix = &conf["bundle"]["windows"]["wix"];
        let fragments: Vec<&str> = wix["fragmentPaths"]
            .as_array()
            .expect("the bundler is given the fragment")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        assert!(
            fragments.iter().any(|path| {
                repo().join("desktop/app").join(path).canonicalize().ok()
                    == installers().join("windows/policy.wxs").canonicalize().ok()
            }),
            "{fragments:?}"
        );
        assert_eq!(wix["componentGroupRefs"], serde_json::json!(["SealpostPolicy"]));
    }

    #[test]
    fn the_admx_templates_write_every_policy_key_as_its_kind_and_name_every_string() {
        let admx_text = read(&installers().join("windows/admx/Sealpost.admx"));
        let adml_text = read(&installers().join("windows/admx/en-US/Sealpost.adml"));
        let admx = roxmltree::Document::parse(&admx_text).expect("Sealpost.admx is well-formed");
        let adml = roxmltree::Document::parse(&adml_text).expect("Sealpost.adml is well-formed");
        assert!(admx.root_element().has_tag_name((ADMX, "policyDefinitions")));
        assert!(adml.root_element().has_tag_name((ADMX, "policyDefinitionResources")));

        let mut strings = BTreeSet::new();
        for string in descendants(adml.root_element(), (ADMX, "string")) {
            let id = attribute(string, "id");
            assert!(strings.insert(id), "string {id} is defined twice");
            assert!(
                string.text().is_some_and(|text| !text.trim().is_empty()),
                "string {id} is empty"
            );
        }
        let presentations: BTreeMap<&str, roxmltree::Node> =
            descendants(adml.root_element(), (ADMX, "presentation"))
                .map(|node| (attribute(node, "id"), node))
                .collect();
        for node in admx.descendants() {
            for value in node.attributes().map(|attribute| attribute.value()) {
                if let Some(id) =
                    value.strip_prefix("$(string.").and_then(|rest| rest.strip_suffix(')'))
                {
                    assert!(strings.contains(id), "the ADML lacks string {id}");
                }
                if let Some(id) =
                    value.strip_prefix("$(presentation.").and_then(|rest| rest.strip_suffix(')'))
                {
                    assert!(presentations.contains_key(id), "the ADML lacks presentation {id}");
                }
            }
        }
        let categories: BTreeSet<&str> = descendants(admx.root_element(), (ADMX, "category"))
            .map(|node| attribute(node, "name"))
            .collect();

        let mut written = BTreeSet::new();
        for policy in descendants(admx.root_element(), (ADMX, "policy")) {
            let name = attribute(policy, "name");
            assert_eq!(
                attribute(policy, "key"),
                REGISTRY_KEY,
                "{name} writes the key Sealpost reads"
            );
            assert_eq!(attribute(policy, "class"), "Machine", "{name}");
            let category = children(policy, (ADMX, "parentCategory")).next().expect("category");
            assert!(categories.contains(attribute(category, "ref")), "{name}'s category");
            if let Some(value_name) = policy.attribute("valueName") {
                assert_eq!(policy_key(value_name).kind, KeyKind::Flag, "{value_name} is a flag");
                for (state, expected) in [("enabledValue", "1"), ("disabledValue", "0")] {
                    let decimal = children(policy, (ADMX, state))
                        .flat_map(|node| children(node, (ADMX, "decimal")))
                        .next()
                        .unwrap_or_else(|| panic!("{name} has no {state}"));
                    assert_eq!(attribute(decimal, "value"), expected, "{name} {state}");
                }
                assert!(written.insert(value_name), "{value_name} is written twice");
            }
            let presentation = policy
                .attribute("presentation")
                .and_then(|reference| reference.strip_prefix("$(presentation."))
                .and_then(|reference| reference.strip_suffix(')'))
                .and_then(|id| presentations.get(id));
            for element in children(policy, (ADMX, "elements")).flat_map(|node| node.children()) {
                if !element.is_element() {
                    continue;
                }
                let value_name = attribute(element, "valueName");
                assert_eq!(attribute(element, "id"), value_name, "element ids are the value names");
                let key = policy_key(value_name);
                match (element.tag_name().name(), key.kind) {
                    ("text", KeyKind::Text) | ("multiText", KeyKind::List) => {}
                    ("decimal", KeyKind::Port) => {
                        assert_eq!(
                            (element.attribute("minValue"), element.attribute("maxValue")),
                            (Some("1"), Some("65535")),
                            "{value_name} takes a port"
                        );
                    }
                    ("enum", KeyKind::Choice(choices)) => {
                        let offered: Vec<&str> = descendants(element, (ADMX, "string"))
                            .filter_map(|node| node.text())
                            .collect();
                        assert_eq!(offered, choices, "{value_name} offers what the agent accepts");
                    }
                    (tag, kind) => panic!("{value_name} is a <{tag}> but the agent reads {kind:?}"),
                }
                let shown = presentation.is_some_and(|presentation| {
                    presentation
                        .children()
                        .any(|control| control.attribute("refId") == Some(value_name))
                });
                assert!(shown, "{name}'s presentation shows {value_name}");
                assert!(written.insert(value_name), "{value_name} is written twice");
            }
        }
        assert_eq!(written, all_managed_names(), "the templates cover every policy key");
    }

    #[test]
    fn the_sample_policies_are_valid_and_show_every_key() {
        for sample in [
            "linux/policy.toml",
            "windows/sealpost-policy.reg",
            "macos/org.sealpost.desktop.mobileconfig",
        ] {
            let policy = Policy::load(&installers().join(sample))
                .unwrap_or_else(|error| panic!("{sample}: {error}"));
            assert_eq!(
                policy.server_url.as_deref(),
                Some("https://sealpost.example.org"),
                "{sample}"
            );
            assert!(policy.lock_server, "{sample}");
        }
        let reg = read(&installers().join("windows/sealpost-policy.reg"));
        for key in KEYS {
            assert!(
                reg.contains(&format!("\"{}\"=", key.managed)),
                "the .reg sample sets {}",
                key.managed
            );
        }

        let profile =
            plist::Value::from_file(installers().join("macos/org.sealpost.desktop.mobileconfig"))
                .expect("the profile is a property list");
        let profile = profile.as_dictionary().expect("a dictionary");
        let text = |dict: &plist::Dictionary, key: &str| {
            dict.get(key)
                .and_then(plist::Value::as_string)
                .unwrap_or_else(|| panic!("no {key}"))
                .to_owned()
        };
        assert_eq!(text(profile, "PayloadType"), "Configuration");
        assert_eq!(text(profile, "PayloadScope"), "System", "the policy is the computer's");
        let payloads =
            profile.get("PayloadContent").and_then(plist::Value::as_array).expect("payloads");
        assert_eq!(payloads.len(), 1);
        let payload = payloads[0].as_dictionary().expect("a payload dictionary");
        assert_eq!(text(payload, "PayloadType"), PREFERENCES_DOMAIN);
        let uuids = [text(profile, "PayloadUUID"), text(payload, "PayloadUUID")];
        for uuid in &uuids {
            let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid} is a UUID");
            assert!(uuid.chars().all(|char| char == '-' || char.is_ascii_hexdigit()), "{uuid}");
        }
        assert_ne!(uuids[0], uuids[1], "each payload has its own UUID");
        assert_ne!(text(profile, "PayloadIdentifier"), text(payload, "PayloadIdentifier"));
        let settings: BTreeSet<&str> =
            payload.keys().map(String::as_str).filter(|key| !key.starts_with("Payload")).collect();
        assert_eq!(settings, all_managed_names(), "the profile shows every key");
    }

    #[test]
    fn the_macos_package_script_and_its_parts_agree() {
        let macos = installers().join("macos");
        let script = read(&macos.join("build-pkg.sh"));
        run(Command::new("bash").arg("-n").arg(macos.join("build-pkg.sh")));
        run(Command::new("shellcheck")
            .arg(macos.join("build-pkg.sh"))
            .arg(macos.join("scripts/postinstall")));

        let identifiers: BTreeSet<&str> = script
            .split("--identifier ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        let distribution_text = read(&macos.join("distribution.xml"));
        let distribution = roxmltree::Document::parse(&distribution_text).expect("well-formed");
        let referenced: BTreeSet<&str> = distribution
            .descendants()
            .filter(|node| node.has_tag_name("pkg-ref"))
            .map(|node| attribute(node, "id"))
            .collect();
        assert_eq!(identifiers, referenced, "the distribution installs what pkgbuild builds");
        for node in distribution.descendants().filter(|node| node.has_tag_name("pkg-ref")) {
            if let Some(file) = node.text() {
                assert!(script.contains(&format!("$work/{file}")), "the script builds {file}");
            }
        }

        let agent = plist::Value::from_file(macos.join("org.sealpost.agent.plist")).expect("plist");
        let agent = agent.as_dictionary().expect("a dictionary");
        let program: Vec<&str> = agent
            .get("ProgramArguments")
            .and_then(plist::Value::as_array)
            .expect("ProgramArguments")
            .iter()
            .filter_map(plist::Value::as_string)
            .collect();
        assert_eq!(program, ["/usr/local/bin/sealpost-agent", "run"]);
        assert!(
            script.contains("agent-root/usr/local/bin/sealpost-agent"),
            "installed where launchd runs it"
        );
        assert!(script.contains("agent-root/Library/LaunchAgents"), "the LaunchAgent is installed");
        assert!(
            read(&macos.join("scripts/postinstall"))
                .contains("/Library/LaunchAgents/org.sealpost.agent.plist")
        );
    }

    #[test]
    fn the_linux_maintainer_scripts_pass_shellcheck() {
        let debian = installers().join("server/debian");
        run(Command::new("shellcheck")
            .arg(debian.join("postinst"))
            .arg(debian.join("prerm"))
            .arg(debian.join("postrm")));
    }

    #[test]
    fn the_server_configuration_unit_and_container_agree_on_one_layout() {
        let server = installers().join("server");
        let settings = sealpost_server::settings::Settings::load(Some(&server.join("server.toml")))
            .expect("the packaged configuration is valid");
        assert_eq!(settings.server.data_dir, Path::new("/var/lib/sealpost"));
        assert_eq!(settings.server.listen.port(), 443);

        let unit = read(&server.join("sealpost-server.service"));
        assert!(unit.contains(
            "ExecStart=/usr/bin/sealpost-server serve --config /etc/sealpost/server.toml"
        ));
        assert!(unit.contains("StateDirectory=sealpost"), "state in /var/lib/sealpost");

        let recipe = read(&server.join("Containerfile"));
        for copied in recipe.lines().filter_map(|line| line.strip_prefix("COPY ")) {
            let words: Vec<&str> =
                copied.split_whitespace().filter(|word| !word.starts_with("--")).collect();
            if let [source, ..] = words.as_slice()
                && !copied.contains("--from=")
                && *source != "."
            {
                assert!(repo().join(source).exists(), "the recipe copies {source}, which exists");
            }
        }
        for layout in [
            "/usr/bin/sealpost-server",
            "/etc/sealpost/server.toml",
            "VOLUME /var/lib/sealpost",
            "USER sealpost",
            "-p sealpost-server",
        ] {
            assert!(recipe.contains(layout), "the container recipe has {layout}");
        }
        let stages = recipe.lines().filter(|line| line.starts_with("FROM ")).count();
        assert_eq!(stages, 2, "a build stage and a slim runtime stage");
    }

    #[test]
    fn postfix_accepts_the_snippets_and_routes_the_reply_domain_to_sealpost() {
        let snippets = installers().join("postfix");
        let config = tempfile::tempdir().expect("temp dir");
        std::fs::write(config.path().join("main.cf"), read(&snippets.join("main.cf")))
            .expect("main.cf");
        let master = format!(
            "{}\n{}",
            read(Path::new("/usr/share/postfix/master.cf.dist")),
            read(&snippets.join("master.cf"))
        );
        std::fs::write(config.path().join("master.cf"), master).expect("master.cf");
        let postconf =
            |args: &[&str]| run(Command::new("postconf").arg("-c").arg(config.path()).args(args));

        let main = postconf(&["-n"]);
        assert!(main.contains("transport_maps = hash:/etc/postfix/sealpost-transport"), "{main}");
        assert!(main.contains("relay_domains = $mydestination, reply.example.org"), "{main}");
        let service = postconf(&["-M", "sealpost/unix"]);
        assert!(service.starts_with("sealpost") && service.contains("smtp"), "{service}");
        let tls = postconf(&["-P", "sealpost/unix/smtp_tls_security_level"]);
        assert!(tls.contains("= none"), "{tls}");

        let route = run(Command::new("postmap")
            .arg("-c")
            .arg(config.path())
            .args(["-q", "reply.example.org"])
            .arg(format!("texthash:{}", snippets.join("transport").display())));
        assert_eq!(route.trim(), "sealpost:[127.0.0.1]:2525", "to the service master.cf defines");
    }
}

mod packages {
    use super::*;
    use sealpost_harness::ServerProcess;
    use std::time::Duration;

    /// The packages `cargo xtask installers --debug` built; `cargo xtask
    /// test` names them.
    fn package(prefix: &str, extension: &str) -> PathBuf {
        let dir = std::env::var_os("SEALPOST_PACKAGES_DIR").map(PathBuf::from).expect(
            "SEALPOST_PACKAGES_DIR names the packages to install: run `cargo xtask installers \
             --debug` and set it to target/installers/debug (cargo xtask test does both)",
        );
        std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(extension)
            })
            .unwrap_or_else(|| panic!("no {prefix}*{extension} in {}", dir.display()))
    }

    fn require_root() {
        let uid = run(Command::new("id").arg("-u"));
        assert_eq!(uid.trim(), "0", "installing packages needs root (CI runs as root)");
    }

    /// apt-get, waiting for the other install test's dpkg lock.
    fn apt(args: &[&str]) -> String {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "DPkg::Lock::Timeout=600", "-y"])
            .args(args))
    }

    fn installed_files(package: &str) -> Vec<PathBuf> {
        run(Command::new("dpkg").args(["-L", package]))
            .lines()
            .map(PathBuf::from)
            .filter(|path| path.is_file())
            .collect()
    }

    /// Puts back what a file held (or its absence) when dropped.
    struct Restore {
        path: PathBuf,
        before: Option<Vec<u8>>,
    }

    impl Restore {
        fn take(path: &Path) -> Self {
            Self { path: path.to_owned(), before: std::fs::read(path).ok() }
        }
    }

    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = match &self.before {
                Some(bytes) => std::fs::write(&self.path, bytes),
                None => std::fs::remove_file(&self.path),
            };
        }
    }

    #[test]
    fn the_desktop_deb_installs_honours_a_policy_placed_before_it_and_uninstalls_cleanly() {
        require_root();
        let deb = package("Sealpost_", ".deb");
        let policy_path = Path::new("/etc/sealpost/policy.toml");
        std::fs::create_dir_all("/etc/sealpost").expect("/etc/sealpost");
        let _restore = Restore::take(policy_path);
        let policy = "server_url = \"https://sealpost.installed.example\"\nlock_server = true\n";
        std::fs::write(policy_path, policy).expect("the policy IT placed before installing");

        apt(&["install", "--no-install-recommends", &deb.display().to_string()]);
        let files = installed_files("sealpost");
        for expected in [
            "/usr/bin/sealpost",
            "/usr/bin/sealpost-agent",
            "/usr/lib/systemd/user/sealpost-agent.service",
            "/usr/share/applications/Sealpost.desktop",
            "/usr/share/icons/hicolor/128x128/apps/sealpost.png",
        ] {
            assert!(
                files.contains(&PathBuf::from(expected)),
                "the package installs {expected}: {files:?}"
            );
        }
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            run(Command::new("/usr/bin/sealpost").arg("--version")).trim(),
            format!("sealpost {version}")
        );
        assert_eq!(
            run(Command::new("/usr/bin/sealpost-agent").arg("--version")).trim(),
            format!("sealpost-agent {version}")
        );
        let applied = run(Command::new("/usr/bin/sealpost-agent")
            .arg("policy")
            .env_remove("SEALPOST_POLICY_FILE")
            .env("SEALPOST_AGENT_DIR", tempfile::tempdir().expect("dir").path()));
        assert!(
            applied.contains("/etc/sealpost/policy.toml")
                && applied.contains("server_url = \"https://sealpost.installed.example\""),
            "{applied}"
        );

        let entry = "/usr/share/applications/Sealpost.desktop";
        run(Command::new("desktop-file-validate").arg(entry));
        let entry = read(Path::new(entry));
        assert!(entry.contains("Exec=sealpost %u"), "registration links reach the app: {entry}");
        assert!(entry.contains("MimeType=x-scheme-handler/sealpost"), "{entry}");
        let runtime = tempfile::tempdir().expect("runtime dir");
        run(Command::new("systemd-analyze")
            .args(["--user", "verify", "/usr/lib/systemd/user/sealpost-agent.service"])
            .env("XDG_RUNTIME_DIR", runtime.path()));

        apt(&["purge", "sealpost"]);
        let left: Vec<&PathBuf> = files.iter().filter(|path| path.exists()).collect();
        assert!(left.is_empty(), "uninstalling leaves nothing behind: {left:?}");
        assert_eq!(read(policy_path), policy, "the policy is IT's, not the package's");
    }

    #[test]
    fn the_desktop_rpm_declares_its_dependencies_and_files() {
        let rpm = package("Sealpost-", ".rpm");
        let query = |flag: &str| run(Command::new("rpm").args(["-qp", flag]).arg(&rpm));
        let requires = query("--requires");
        for needed in ["libwebkit2gtk-4.1.so.0", "libgtk-3.so.0", "libayatana-appindicator-gtk3"] {
            assert!(requires.contains(needed), "the .rpm requires {needed}: {requires}");
        }
        let files = query("--list");
        for expected in [
            "/usr/bin/sealpost",
            "/usr/bin/sealpost-agent",
            "/usr/lib/systemd/user/sealpost-agent.service",
            "/usr/share/applications/Sealpost.desktop",
        ] {
            assert!(
                files.lines().any(|line| line == expected),
                "the .rpm holds {expected}: {files}"
            );
        }
    }

    #[test]
    fn the_server_deb_installs_a_hardened_service_that_runs_as_its_own_user() {
        require_root();
        let deb = package("sealpost-server_", ".deb");
        let control = run(Command::new("dpkg-deb").args(["--field"]).arg(&deb).arg("Depends"));
        assert!(control.contains("libc6") && control.contains("adduser"), "{control}");

        apt(&["install", "--no-install-recommends", &deb.display().to_string()]);
        let files = installed_files("sealpost-server");
        let passwd = run(Command::new("getent").args(["passwd", "sealpost"]));
        assert!(passwd.contains("/var/lib/sealpost"), "a system user of its own: {passwd}");
        let owner = |path: &str, format: &str| {
            run(Command::new("stat").args(["-c", format, path])).trim().to_owned()
        };
        assert_eq!(owner("/var/lib/sealpost", "%U:%G %a"), "sealpost:sealpost 750");
        assert_eq!(owner("/etc/sealpost/server.toml", "%U:%G %a"), "root:sealpost 640");

        let unit = "/usr/lib/systemd/system/sealpost-server.service";
        run(Command::new("systemd-analyze").args(["verify", unit]));
        // The exposure score out of 10, times 10; 2.0 is deep in "OK".
        run(Command::new("systemd-analyze").args([
            "security",
            "--offline=yes",
            "--threshold=20",
            unit,
        ]));
        let unit_text = read(Path::new(unit));
        for hardening in [
            "User=sealpost",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "StateDirectory=sealpost",
        ] {
            assert!(unit_text.contains(hardening), "the unit sets {hardening}");
        }

        // The packaged binary and configuration, run as the service runs
        // them; only where it listens and keeps state differ.
        let state = tempfile::tempdir().expect("state dir");
        run(Command::new("chown").arg("sealpost:sealpost").arg(state.path()));
        let mut serve = Command::new("runuser");
        serve
            .args(["-u", "sealpost", "--", "/usr/bin/sealpost-server", "serve", "--config"])
            .arg("/etc/sealpost/server.toml")
            .env("SEALPOST_SERVER__LISTEN", "127.0.0.1:0")
            .env("SEALPOST_SERVER__DATA_DIR", state.path())
            .current_dir(state.path());
        let server = ServerProcess::start_command(serve).expect("the installed server starts");
        assert!(server.base_url.starts_with("https://127.0.0.1:"), "{}", server.base_url);
        server.terminate(Duration::from_secs(30)).expect("stops on SIGTERM");

        apt(&["purge", "sealpost-server"]);
        let left: Vec<&PathBuf> = files.iter().filter(|path| path.exists()).collect();
        assert!(left.is_empty(), "purging leaves nothing of the package: {left:?}");
        assert!(Path::new("/var/lib/sealpost").exists(), "the secure messages are kept on purge");
        let _ = std::fs::remove_dir_all("/var/lib/sealpost");
        let _ = Command::new("deluser").args(["--system", "sealpost"]).output();
    }
}
