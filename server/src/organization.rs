//! The organization's identity: branding, the sender of automated mail, the
//! Secure Message Center URL, notification templates and the SMTP relay.
//!
//! The configuration file gives the starting values; an admin can change
//! them through `/api/v1/admin/organization`. Changes are stored in the
//! database (they survive restarts and win over the file) and apply to the
//! next notification: readers take an [`Arc<Current>`] snapshot, an update
//! swaps in a new one. Instances sharing a database re-read the stored
//! changes every few seconds ([`Organization::keep_current`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use minijinja::{AutoEscape, Environment};
use sealpost_proto::api::{
    IssuedNotification, OrganizationSettings, OrganizationUpdate, SmtpRelay,
};
use sealpost_proto::notification::{Branding, Placeholder, SignedNotification, issue};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::mailer::{MailError, Mailer};
use crate::settings::{Secret, Settings, SmtpSecurity};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OrganizationError {
    /// The change is refused; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored organization settings are unreadable: {0}")]
    Corrupt(String),
}

/// Everything derived from the effective settings, replaced as a whole.
pub struct Current {
    pub settings: Settings,
    pub branding: Branding,
    /// Without a trailing slash.
    pub center_url: String,
    pub mailer: Mailer,
    templates: Option<Environment<'static>>,
    overrides: OrganizationUpdate,
}

pub struct Organization {
    base: Settings,
    origin: String,
    data_dir: PathBuf,
    store: Arc<dyn Store>,
    current: RwLock<Arc<Current>>,
}

/// What a template can use.
#[derive(Serialize)]
struct TemplateValues<'a> {
    sender: String,
    sender_name: &'a str,
    sender_address: &'a str,
    read_url: &'a str,
    organization_name: &'a str,
    footer: &'a str,
    legal_disclaimer: &'a str,
    secure_message_disclaimer: &'a str,
}

impl Organization {
    /// The configured settings with the stored admin changes on top.
    pub async fn load(
        base: Settings,
        origin: String,
        store: Arc<dyn Store>,
    ) -> Result<Self, OrganizationError> {
        let overrides = stored_overrides(&*store).await?;
        let data_dir = base.server.data_dir.clone();
        let current = build(&base, &origin, &data_dir, overrides)
            .map_err(|error| OrganizationError::Corrupt(error.to_string()))?;
        Ok(Self { base, origin, data_dir, store, current: RwLock::new(Arc::new(current)) })
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Takes in the changes another server instance on the same database
    /// saved; returns whether there were any.
    pub async fn refresh(&self) -> Result<bool, OrganizationError> {
        let stored = stored_overrides(&*self.store).await?;
        if stored == self.current().overrides {
            return Ok(false);
        }
        let next = Arc::new(build(&self.base, &self.origin, &self.data_dir, stored)?);
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        Ok(true)
    }

    /// Refreshes every `interval` until `shutdown`, so an admin's change
    /// through any instance reaches all of them.
    pub async fn keep_current(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.refresh().await {
                Ok(true) => tracing::info!("organization settings changed by another instance"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "could not re-read the organization settings"),
            }
        }
    }

    /// Validates and applies a change; nothing changes when it is refused.
    pub async fn update(
        &self,
        update: OrganizationUpdate,
    ) -> Result<Arc<Current>, OrganizationError> {
        // On top of what is stored now, which another instance may have changed.
        let merged = merge(&stored_overrides(&*self.store).await?, update);
        let next = Arc::new(build(&self.base, &self.origin, &self.data_dir, merged)?);
        let json = serde_json::to_string(&next.overrides)
            .map_err(|error| OrganizationError::Corrupt(error.to_string()))?;
        self.store.save_organization_overrides(&json, OffsetDateTime::now_utc()).await?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next.clone();
        Ok(next)
    }
}

async fn stored_overrides(store: &dyn Store) -> Result<OrganizationUpdate, OrganizationError> {
    match store.organization_overrides().await? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|error| OrganizationError::Corrupt(error.to_string())),
        None => Ok(OrganizationUpdate::default()),
    }
}

impl Current {
    /// The notification for one recipient: signed headers, and the
    /// placeholder from the organization's templates or the built-in one.
    pub fn issue(
        &self,
        signed: &SignedNotification,
        sender_name: Option<&str>,
        sender_address: &str,
        read_url: &str,
    ) -> IssuedNotification {
        let placeholder =
            Placeholder { sender_name, sender_address, read_url, branding: &self.branding };
        let mut issued = issue(signed, &placeholder);
        if let Some(templates) = &self.templates {
            let values = self.template_values(sender_name, sender_address, read_url);
            // Templates were rendered with sample values when they were set,
            // so a failure here would be a bug; the built-in body is kept then.
            if let Ok(text) = render(templates, "text", &values) {
                issued.text_body = text;
            }
            if let Ok(html) = render(templates, "html", &values) {
                issued.html_body = html;
            }
        }
        issued
    }

    fn template_values<'a>(
        &'a self,
        sender_name: Option<&'a str>,
        sender_address: &'a str,
        read_url: &'a str,
    ) -> TemplateValues<'a> {
        let name = sender_name.unwrap_or_default();
        TemplateValues {
            sender: if name.is_empty() {
                sender_address.to_owned()
            } else {
                format!("{name} <{sender_address}>")
            },
            sender_name: name,
            sender_address,
            read_url,
            organization_name: &self.branding.organization_name,
            footer: &self.branding.footer,
            legal_disclaimer: &self.branding.legal_disclaimer,
            secure_message_disclaimer: &self.branding.secure_message_disclaimer,
        }
    }

    /// The admin API's view; the SMTP password is never shown.
    pub fn describe(&self) -> OrganizationSettings {
        let smtp = &self.settings.smtp;
        OrganizationSettings {
            organization_name: self.branding.organization_name.clone(),
            footer: self.branding.footer.clone(),
            legal_disclaimer: self.branding.legal_disclaimer.clone(),
            secure_message_disclaimer: self.branding.secure_message_disclaimer.clone(),
            sender_name: smtp.from_name.clone(),
            sender_address: smtp.from_address.clone(),
            center_url: self.center_url.clone(),
            text_template: self.overrides.text_template.clone().filter(|t| !t.is_empty()),
            html_template: self.overrides.html_template.clone().filter(|t| !t.is_empty()),
            smtp: SmtpRelay {
                host: smtp.host.clone(),
                port: smtp.port,
                security: security_name(smtp.security).to_owned(),
                username: smtp.username.clone(),
                password_set: smtp.password.is_some(),
            },
        }
    }
}

/// Later values win; an SMTP reset drops the stored relay.
fn merge(old: &OrganizationUpdate, new: OrganizationUpdate) -> OrganizationUpdate {
    let smtp = if new.use_configured_smtp { None } else { new.smtp.or_else(|| old.smtp.clone()) };
    OrganizationUpdate {
        organization_name: new.organization_name.or_else(|| old.organization_name.clone()),
        footer: new.footer.or_else(|| old.footer.clone()),
        legal_disclaimer: new.legal_disclaimer.or_else(|| old.legal_disclaimer.clone()),
        secure_message_disclaimer: new
            .secure_message_disclaimer
            .or_else(|| old.secure_message_disclaimer.clone()),
        sender_name: new.sender_name.or_else(|| old.sender_name.clone()),
        sender_address: new.sender_address.or_else(|| old.sender_address.clone()),
        center_url: new.center_url.or_else(|| old.center_url.clone()),
        text_template: new.text_template.or_else(|| old.text_template.clone()),
        html_template: new.html_template.or_else(|| old.html_template.clone()),
        smtp,
        use_configured_smtp: false,
    }
}

fn security_name(security: SmtpSecurity) -> &'static str {
    match security {
        SmtpSecurity::Starttls => "starttls",
        SmtpSecurity::Tls => "tls",
        SmtpSecurity::None => "none",
    }
}

fn build(
    base: &Settings,
    origin: &str,
    data_dir: &std::path::Path,
    overrides: OrganizationUpdate,
) -> Result<Current, OrganizationError> {
    let mut settings = base.clone();
    let set = |target: &mut String, value: &Option<String>| {
        if let Some(value) = value {
            *target = value.trim().to_owned();
        }
    };
    set(&mut settings.branding.organization_name, &overrides.organization_name);
    set(&mut settings.branding.footer, &overrides.footer);
    set(&mut settings.branding.legal_disclaimer, &overrides.legal_disclaimer);
    set(&mut settings.branding.secure_message_disclaimer, &overrides.secure_message_disclaimer);
    set(&mut settings.smtp.from_name, &overrides.sender_name);
    set(&mut settings.smtp.from_address, &overrides.sender_address);
    if let Some(url) = &overrides.center_url {
        settings.branding.center_url = Some(url.trim().to_owned());
    }
    if let Some(relay) = &overrides.smtp {
        settings.smtp.host = Some(relay.host.trim().to_owned());
        settings.smtp.port = relay.port;
        settings.smtp.security = match relay.security.as_str() {
            "starttls" => SmtpSecurity::Starttls,
            "tls" => SmtpSecurity::Tls,
            "none" => SmtpSecurity::None,
            other => {
                return Err(OrganizationError::Invalid(format!(
                    "smtp.security {other:?} must be starttls, tls or none"
                )));
            }
        };
        settings.smtp.username = relay.username.clone();
        settings.smtp.password = relay.password.clone().map(Secret::new);
    }
    settings.validate().map_err(|error| OrganizationError::Invalid(error.to_string()))?;
    if settings.branding.organization_name.is_empty() {
        return Err(OrganizationError::Invalid("organization_name must not be empty".into()));
    }
    let mailer = Mailer::new(&settings.smtp, data_dir).map_err(|error| match error {
        MailError::Settings { key, problem } => {
            OrganizationError::Invalid(format!("{key}: {problem}"))
        }
        other => OrganizationError::Invalid(other.to_string()),
    })?;
    let templates = templates(&overrides)?;
    let branding = Branding {
        organization_name: settings.branding.organization_name.clone(),
        footer: settings.branding.footer.clone(),
        legal_disclaimer: settings.branding.legal_disclaimer.clone(),
        secure_message_disclaimer: settings.branding.secure_message_disclaimer.clone(),
    };
    let center_url = settings
        .branding
        .center_url
        .clone()
        .unwrap_or_else(|| origin.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let current = Current { settings, branding, center_url, mailer, templates, overrides };
    if let Some(templates) = &current.templates {
        // Render once with sample values: a template that fails fails now,
        // at the admin's request, not on a notification later.
        let sample = current.template_values(
            Some("Dr. Sample"),
            "sample@example.org",
            "https://example.org/m/1",
        );
        for name in ["text", "html"] {
            match render(templates, name, &sample) {
                Err(error) if error.kind() != minijinja::ErrorKind::TemplateNotFound => {
                    return Err(OrganizationError::Invalid(format!("{name}_template: {error}")));
                }
                _ => {}
            }
        }
    }
    Ok(current)
}

/// The organization's templates, or `None` when both are the built-in ones.
fn templates(
    overrides: &OrganizationUpdate,
) -> Result<Option<Environment<'static>>, OrganizationError> {
    let text = overrides.text_template.clone().filter(|t| !t.trim().is_empty());
    let html = overrides.html_template.clone().filter(|t| !t.trim().is_empty());
    if text.is_none() && html.is_none() {
        return Ok(None);
    }
    let mut environment = Environment::new();
    // Everything that comes from users (names, addresses) is escaped in HTML.
    environment.set_auto_escape_callback(|name| {
        if name == "html" { AutoEscape::Html } else { AutoEscape::None }
    });
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    environment.set_keep_trailing_newline(true);
    for (name, source) in [("text", text), ("html", html)] {
        if let Some(source) = source {
            environment
                .add_template_owned(name, source)
                .map_err(|error| OrganizationError::Invalid(format!("{name}_template: {error}")))?;
        }
    }
    Ok(Some(environment))
}

/// Renders `name`; a template the organization did not set is an error the
/// caller treats as "keep the built-in body".
fn render(
    environment: &Environment<'static>,
    name: &str,
    values: &TemplateValues<'_>,
) -> Result<String, minijinja::Error> {
    environment.get_template(name)?.render(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_current(overrides: OrganizationUpdate) -> Result<Current, OrganizationError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.server.data_dir = dir.path().to_owned();
        build(&settings, "https://sealpost.example.org", dir.path(), overrides)
    }

    #[test]
    fn html_templates_escape_what_users_wrote() {
        let current = sample_current(OrganizationUpdate {
            html_template: Some(
                "<p>{{ sender }} wrote: <a href=\"{{ read_url }}\">read</a></p>".into(),
            ),
            text_template: Some("{{ sender }} -> {{ read_url }}".into()),
            ..OrganizationUpdate::default()
        })
        .expect("valid templates");
        let values = current.template_values(
            Some("<script>x</script>"),
            "a@b.example",
            "https://x/?a=1&b=2",
        );
        let templates = current.templates.as_ref().expect("templates");
        let html = render(templates, "html", &values).expect("renders");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("a=1&amp;b=2"), "{html}");
        let text = render(templates, "text", &values).expect("renders");
        assert_eq!(text, "<script>x</script> <a@b.example> -> https://x/?a=1&b=2");
    }

    #[test]
    fn broken_templates_and_bad_values_are_refused_with_the_field_named() {
        let broken = sample_current(OrganizationUpdate {
            text_template: Some("{{ sender".into()),
            ..Default::default()
        });
        assert!(
            matches!(broken, Err(OrganizationError::Invalid(m)) if m.starts_with("text_template"))
        );
        let unknown = sample_current(OrganizationUpdate {
            html_template: Some("{{ nope }}".into()),
            ..Default::default()
        });
        assert!(
            matches!(unknown, Err(OrganizationError::Invalid(m)) if m.starts_with("html_template"))
        );
        let address = sample_current(OrganizationUpdate {
            sender_address: Some("not an address".into()),
            ..Default::default()
        });
        assert!(
            matches!(address, Err(OrganizationError::Invalid(m)) if m.contains("smtp.from_address"))
        );
    }

    #[tokio::test]
    async fn changes_survive_a_restart_and_refused_ones_change_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.server.data_dir = dir.path().to_owned();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store: Arc<dyn Store> =
            Arc::new(crate::store::sqlite::SqliteStore::open(&url).await.expect("store"));
        let origin = "https://sealpost.example.org".to_owned();
        let organization = Organization::load(settings.clone(), origin.clone(), store.clone())
            .await
            .expect("load");
        organization
            .update(OrganizationUpdate { footer: Some("New footer".into()), ..Default::default() })
            .await
            .expect("valid change");
        let refused = organization
            .update(OrganizationUpdate {
                center_url: Some("http://plain".into()),
                ..Default::default()
            })
            .await;
        assert!(matches!(refused, Err(OrganizationError::Invalid(m)) if m.contains("center_url")));

        let reloaded = Organization::load(settings, origin, store).await.expect("reload");
        assert_eq!(reloaded.current().branding.footer, "New footer");
        assert_eq!(reloaded.current().center_url, "https://sealpost.example.org");
    }
}
