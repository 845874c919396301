//! The page templates, compiled into the binary, and what every page shows:
//! the organization's name and footer, who is signed in, the CSRF token.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value, context};

use super::session::{CsrfToken, Viewer};
use crate::state::AppState;

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("signin.html", include_str!("../../templates/signin.html")),
    ("register.html", include_str!("../../templates/register.html")),
    ("mailbox.html", include_str!("../../templates/mailbox.html")),
    ("message.html", include_str!("../../templates/message.html")),
    ("print.html", include_str!("../../templates/print.html")),
    ("other_account.html", include_str!("../../templates/other_account.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("code_request.html", include_str!("../../templates/code_request.html")),
    ("code_verify.html", include_str!("../../templates/code_verify.html")),
    ("compose.html", include_str!("../../templates/compose.html")),
    ("account.html", include_str!("../../templates/account.html")),
    ("masked.html", include_str!("../../templates/masked.html")),
    ("masked_sent.html", include_str!("../../templates/masked_sent.html")),
];

pub struct Pages {
    templates: Environment<'static>,
}

impl Pages {
    /// Compiles the templates; a broken one stops the server at start.
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut templates = Environment::new();
        // `.html` templates escape every value they print.
        for (name, source) in TEMPLATES {
            templates.add_template(name, source)?;
        }
        templates.add_filter("datetime", datetime);
        templates.add_filter("size", size);
        Ok(Self { templates })
    }

    /// Renders page `name` with `values` and what every page shows.
    pub fn render(
        &self,
        state: &AppState,
        viewer: &Viewer,
        csrf: &CsrfToken,
        name: &str,
        values: Value,
    ) -> Response {
        self.render_string(state, viewer, csrf, name, values)
            .map(|html| Html(html).into_response())
            .unwrap_or_else(|| {
                (StatusCode::INTERNAL_SERVER_ERROR, "This page could not be shown.").into_response()
            })
    }

    /// The organization's error page.
    pub fn error(
        &self,
        state: &AppState,
        viewer: &Viewer,
        csrf: &CsrfToken,
        status: StatusCode,
        message: &str,
    ) -> String {
        let values = context! {
            status => status.as_u16(),
            title => status.canonical_reason().unwrap_or("Error"),
            message,
            signed_in => viewer.0.is_some(),
        };
        self.render_string(state, viewer, csrf, "error.html", values)
            .unwrap_or_else(|| message.to_owned())
    }

    fn render_string(
        &self,
        state: &AppState,
        viewer: &Viewer,
        csrf: &CsrfToken,
        name: &str,
        values: Value,
    ) -> Option<String> {
        let organization = state.organization.current();
        let branding = &organization.branding;
        let common = context! {
            organization_name => &branding.organization_name,
            footer => &branding.footer,
            legal_disclaimer => &branding.legal_disclaimer,
            csrf => &csrf.value,
            viewer => viewer.account().map(|account| {
                let member = state.settings.webmail.is_member(&account.email);
                context! {
                    email => &account.email,
                    name => account.display_name.as_deref().unwrap_or(&account.email),
                    can_compose => member,
                    can_write_masked => member && crate::masking::domain(state).is_some(),
                }
            }),
        };
        let template = self.templates.get_template(name).ok()?;
        match template.render(context! { ..values, ..common }) {
            Ok(html) => Some(html),
            Err(error) => {
                tracing::error!(template = name, error = %error, "page could not be rendered");
                None
            }
        }
    }
}

/// A form's page: `status` when it shows why the form was refused.
pub fn refused_if(page: Response, error: Option<&str>, status: StatusCode) -> Response {
    match error {
        Some(_) => (status, page).into_response(),
        None => page,
    }
}

/// Unix seconds as `2026-11-29 14:05 UTC`.
fn datetime(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .map(crate::clock::human_date)
        .unwrap_or_default()
}

/// Bytes as `12 KB`.
pub(super) fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} bytes"),
        1_000..1_000_000 => format!("{} KB", bytes.div_ceil(1_000)),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        Pages::new().expect("templates compile");
    }

    #[test]
    fn sizes_and_times_read_naturally() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(12_345), "13 KB");
        assert_eq!(size(2_500_000), "2.5 MB");
        assert_eq!(datetime(1_795_428_000), "2026-11-23 10:00 UTC");
    }
}
