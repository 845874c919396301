//! The organization's directory of recognised correspondents, kept by its
//! admins: imported from a CSV file (as exported from a CRM or a
//! spreadsheet), listed a page at a time, and pruned one address at a time.
//! Inbound reply routing relays only mail from the addresses listed here.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use sealpost_proto::api::{DirectoryEntry, DirectoryImport, DirectoryPage, ErrorBody, RejectedRow};
use serde::Deserialize;

use super::admin::require_admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::routes::input::{display_name, email_address};
use crate::state::AppState;
use crate::store::{DirectoryRecord, NewDirectoryEntry};

/// Largest directory file accepted: some 200,000 rows of address and name.
pub const MAX_IMPORT_BYTES: usize = 16 << 20;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Entries to skip, by address order.
    #[serde(default)]
    offset: u64,
    /// Entries to return, at most 1000.
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

#[utoipa::path(get, path = "/api/v1/admin/directory", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = DirectoryPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> ApiResult<ApiJson<DirectoryPage>> {
    require_admin(&state, &caller)?;
    let (entries, total) = state.store.directory_page(page.offset, page.limit.min(1000)).await?;
    Ok(ApiJson(DirectoryPage { entries: entries.into_iter().map(entry_view).collect(), total }))
}

/// Adds the rows of a CSV file whose header names an `email` column (and
/// optionally `name`, or `first name` and `last name`); an address already
/// listed takes the new name. Rows that cannot be used are reported with
/// their line and reason; the others are stored together.
#[utoipa::path(post, path = "/api/v1/admin/directory/import", tag = "admin", security(("bearer" = [])),
    request_body(content_type = "text/csv", description = "A header line, then one correspondent per line"),
    responses((status = 200, body = DirectoryImport), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<ApiJson<DirectoryImport>> {
    require_admin(&state, &caller)?;
    let (entries, rejected) = parse_csv(&body)?;
    let changes = state.store.import_directory(&entries, state.clock.now()).await?;
    tracing::info!(admin = %caller.account.email, added = changes.added, updated = changes.updated, rejected = rejected.len(), "directory imported");
    Ok(ApiJson(DirectoryImport {
        added: changes.added,
        updated: changes.updated,
        unchanged: changes.unchanged,
        rejected,
    }))
}

#[utoipa::path(delete, path = "/api/v1/admin/directory/{email}", tag = "admin", security(("bearer" = [])),
    params(("email" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> ApiResult<StatusCode> {
    require_admin(&state, &caller)?;
    let email = email_address(&email)?;
    if state.store.remove_directory_entry(&email).await? {
        tracing::info!(admin = %caller.account.email, email = %email, "removed from the directory");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

fn entry_view(record: DirectoryRecord) -> DirectoryEntry {
    DirectoryEntry { email: record.email, name: record.name, updated_at: record.updated_at }
}

/// The usable rows of a directory file and why the others are not.
fn parse_csv(bytes: &[u8]) -> ApiResult<(Vec<NewDirectoryEntry>, Vec<RejectedRow>)> {
    // Spreadsheets save UTF-8 with a byte order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|error| ApiError::bad_request(format!("The file is not CSV: {error}")))?
        .clone();
    let column = |names: &[&str]| {
        header.iter().position(|title| {
            let title = title.to_lowercase().replace(['_', '-'], " ");
            names.contains(&title.as_str())
        })
    };
    let email_column = column(&["email", "email address", "e mail", "mail"]).ok_or_else(|| {
        ApiError::bad_request(format!(
            "The first line must name the columns, one of them `email` (and optionally `name`); it reads {:?}.",
            header.iter().collect::<Vec<_>>().join(",")
        ))
    })?;
    let name_column = column(&["name", "full name", "display name"]);
    let first_column = column(&["first name", "given name"]);
    let last_column = column(&["last name", "surname", "family name"]);
    let groups_column = column(&["group", "groups", "list", "lists"]);

    let mut entries: Vec<NewDirectoryEntry> = Vec::new();
    let mut lines_of: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut rejected = Vec::new();
    for row in reader.records() {
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                let line = error.position().map_or(0, |position| line_at(bytes, position));
                rejected
                    .push(RejectedRow { line, reason: format!("not readable as CSV: {error}") });
                continue;
            }
        };
        let line = row.position().map_or(0, |position| line_at(bytes, position));
        let field = |index: Option<usize>| index.and_then(|i| row.get(i)).unwrap_or("").trim();
        let raw_email = field(Some(email_column));
        if raw_email.is_empty() && row.iter().all(str::is_empty) {
            continue;
        }
        let Ok(email) = email_address(raw_email) else {
            let reason = format!("{raw_email:?} is not an email address");
            rejected.push(RejectedRow { line, reason });
            continue;
        };
        let name = match field(name_column) {
            "" => [field(first_column), field(last_column)]
                .into_iter()
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            name => name.to_owned(),
        };
        let name = match name.as_str() {
            "" => None,
            name => match display_name(name) {
                Ok(name) => Some(name),
                Err(_) => {
                    let reason =
                        "the name must have at most 100 characters and no control characters"
                            .to_owned();
                    rejected.push(RejectedRow { line, reason });
                    continue;
                }
            },
        };
        if let Some(first) = lines_of.get(&email) {
            rejected
                .push(RejectedRow { line, reason: format!("{email} is already on line {first}") });
            continue;
        }
        lines_of.insert(email.clone(), line);
        // Several groups in one cell are separated by semicolons.
        let groups = groups_column.map(|_| {
            field(groups_column)
                .split(';')
                .map(group_name)
                .filter(|group| !group.is_empty())
                .collect()
        });
        entries.push(NewDirectoryEntry { email, name, groups });
    }
    Ok((entries, rejected))
}

/// A group's name as stored and looked up: trimmed, lowercase, inner
/// spaces kept single.
pub fn group_name(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// The line (from 1) a record starts on, counted in the file itself: after
/// a CRLF the reader places the next record on the LF, and counts it on the
/// line before.
fn line_at(bytes: &[u8], position: &csv::Position) -> u64 {
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX).min(bytes.len());
    let through = if bytes.get(start) == Some(&b'\n') { start + 1 } else { start };
    1 + bytes[..through].iter().filter(|&&byte| byte == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spreadsheet_export_is_read_with_its_names_and_its_mistakes() {
        let file = "\u{feff}First Name,Last Name,E-mail,Class\r\n\
                    Tim,Baker,Tim@Example.org,2009\r\n\
                    \"Ng, Jr.\",,jr@example.org,2011\r\n\
                    Greg,,not-an-address,2012\r\n\
                    ,,,\r\n\
                    Tim,B.,tim@example.org,2009\r\n\
                    Ann,Lee,ann@example.org\r\n";
        let (entries, rejected) = parse_csv(file.as_bytes()).expect("readable");
        let read: Vec<(&str, Option<&str>)> =
            entries.iter().map(|e| (e.email.as_str(), e.name.as_deref())).collect();
        assert_eq!(
            read,
            [
                ("tim@example.org", Some("Tim Baker")),
                ("jr@example.org", Some("Ng, Jr.")),
                ("ann@example.org", Some("Ann Lee")),
            ]
        );
        assert_eq!(
            rejected,
            [
                RejectedRow {
                    line: 4,
                    reason: "\"not-an-address\" is not an email address".into()
                },
                RejectedRow { line: 6, reason: "tim@example.org is already on line 2".into() },
            ]
        );
    }

    #[test]
    fn lines_are_counted_as_an_editor_shows_them() {
        let (_, rejected) = parse_csv(b"email\nbad\n").expect("readable");
        assert_eq!(rejected[0].line, 2);
        let (_, rejected) = parse_csv(b"email\r\nok@example.org\r\nbad\r\n").expect("readable");
        assert_eq!(rejected[0].line, 3);
    }

    #[test]
    fn a_file_without_an_email_column_is_refused_whole() {
        let error = parse_csv(b"name,phone\nTim,555\n").expect_err("no email column");
        assert!(error.message.contains("`email`"), "{}", error.message);
        assert!(error.message.contains("name,phone"), "{}", error.message);
    }
}
