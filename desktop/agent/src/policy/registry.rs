//! The Windows policy: the values under
//! `HKEY_LOCAL_MACHINE\Software\Policies\Sealpost\Sealpost`, as the MSI's
//! public properties, the ADMX templates (Group Policy, Intune) or a
//! `reg import` write them. A `.reg` export of the key is read the same way,
//! so a policy can be checked on any computer before it is deployed.

use super::{ManagedValue, PolicyError, REGISTRY_KEY, insert_managed};

// The registry's value types (winnt.h).
const REG_SZ: u32 = 1;
const REG_EXPAND_SZ: u32 = 2;
const REG_BINARY: u32 = 3;
const REG_DWORD: u32 = 4;
const REG_MULTI_SZ: u32 = 7;
const REG_QWORD: u32 = 11;

/// A registry value from its type and raw bytes, as `RegEnumValueW` and
/// `.reg` exports give them.
pub fn decode(kind: u32, bytes: &[u8]) -> ManagedValue {
    match kind {
        REG_SZ | REG_EXPAND_SZ => match utf16(bytes) {
            Some(text) => ManagedValue::Text(text.trim_end_matches('\0').to_owned()),
            None => ManagedValue::Other("text that is not valid UTF-16".to_owned()),
        },
        REG_DWORD => match <[u8; 4]>::try_from(bytes) {
            Ok(bytes) => ManagedValue::Number(i64::from(u32::from_le_bytes(bytes))),
            Err(_) => ManagedValue::Other(format!("a REG_DWORD of {} bytes", bytes.len())),
        },
        REG_QWORD => match <[u8; 8]>::try_from(bytes) {
            Ok(bytes) => ManagedValue::Number(i64::from_le_bytes(bytes)),
            Err(_) => ManagedValue::Other(format!("a REG_QWORD of {} bytes", bytes.len())),
        },
        REG_MULTI_SZ => match utf16(bytes) {
            Some(text) => ManagedValue::List(
                text.split('\0').filter(|item| !item.is_empty()).map(str::to_owned).collect(),
            ),
            None => ManagedValue::Other("a list that is not valid UTF-16".to_owned()),
        },
        REG_BINARY => ManagedValue::Other("binary data (REG_BINARY)".to_owned()),
        other => ManagedValue::Other(format!("a value of registry type {other}")),
    }
}

fn utf16(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> =
        bytes.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect();
    String::from_utf16(&units).ok()
}

/// The policy settings in the TOML layout from the key's values, or the
/// reason an export could not be read.
pub(super) fn settings(
    values: Result<Vec<(String, ManagedValue)>, String>,
    origin: &str,
) -> Result<toml::Table, PolicyError> {
    let values =
        values.map_err(|message| PolicyError::Malformed { origin: origin.to_owned(), message })?;
    let mut settings = toml::Table::new();
    for (name, value) in values {
        insert_managed(&mut settings, &name, value, origin)?;
    }
    Ok(settings)
}

/// The values a registry export (`regedit` "Export", `reg export`) sets
/// under the policy key. Other keys in the file are ignored; a file without
/// the policy key is an error, since it cannot be what IT meant to deploy.
pub fn parse_export(bytes: &[u8]) -> Result<Vec<(String, ManagedValue)>, String> {
    let text =
        match bytes {
            // regedit writes UTF-16LE with a byte order mark.
            [0xFF, 0xFE, rest @ ..] => utf16(rest).ok_or("the file is not valid UTF-16")?,
            [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec())
                .map_err(|_| "the file is neither UTF-16 nor UTF-8")?,
            _ => String::from_utf8(bytes.to_vec())
                .map_err(|_| "the file is neither UTF-16 nor UTF-8")?,
        };
    let mut lines = logical_lines(&text).into_iter();
    match lines.next() {
        Some((_, header))
            if header == "Windows Registry Editor Version 5.00" || header == "REGEDIT4" => {}
        _ => {
            return Err("it is not a registry export: the first line must be \
                 \"Windows Registry Editor Version 5.00\""
                .to_owned());
        }
    }
    let policy_key = format!(r"HKEY_LOCAL_MACHINE\{REGISTRY_KEY}").to_ascii_lowercase();
    let mut in_policy_key = false;
    let mut found_policy_key = false;
    let mut values = Vec::new();
    for (number, line) in lines {
        if let Some(key) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            let key = key.replace("HKLM\\", "HKEY_LOCAL_MACHINE\\").to_ascii_lowercase();
            in_policy_key = key == policy_key;
            found_policy_key |= in_policy_key;
            continue;
        }
        if !in_policy_key {
            continue;
        }
        let (name, value) =
            parse_value_line(&line).map_err(|problem| format!("line {number}: {problem}"))?;
        if let Some(value) = value {
            values.push((name, value));
        }
    }
    if !found_policy_key {
        return Err(format!(
            "it sets nothing under [HKEY_LOCAL_MACHINE\\{REGISTRY_KEY}], the key Sealpost reads"
        ));
    }
    Ok(values)
}

/// The file's lines with continuations (`\` at the end) joined, blank lines
/// and comments dropped, each with the number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let (number, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        joined.push_str(line);
        if joined.ends_with('\\') && joined.contains("=hex") {
            joined.pop();
            pending = Some((number, joined));
            continue;
        }
        if !joined.is_empty() && !joined.starts_with(';') {
            lines.push((number, joined));
        }
    }
    lines.extend(pending);
    lines
}

/// `"Name"=value`; `None` for a deletion (`"Name"=-`).
fn parse_value_line(line: &str) -> Result<(String, Option<ManagedValue>), String> {
    let rest = line.strip_prefix('"').ok_or("expected \"Name\"=value")?;
    let (name, rest) = read_quoted(rest)?;
    let value = rest.strip_prefix('=').ok_or("expected = after the value name")?;
    if value == "-" {
        return Ok((name, None));
    }
    if let Some(quoted) = value.strip_prefix('"') {
        let (text, rest) = read_quoted(quoted)?;
        if !rest.is_empty() {
            return Err(format!("unexpected {rest:?} after the text of {name:?}"));
        }
        return Ok((name, Some(ManagedValue::Text(text))));
    }
    if let Some(hex) = value.strip_prefix("dword:") {
        let number = u32::from_str_radix(hex, 16)
            .map_err(|_| format!("{name:?} has an invalid dword {hex:?}"))?;
        return Ok((name, Some(ManagedValue::Number(i64::from(number)))));
    }
    let (kind, hex) = if let Some(hex) = value.strip_prefix("hex:") {
        (REG_BINARY, hex)
    } else if let Some(rest) = value.strip_prefix("hex(") {
        let (kind, hex) =
            rest.split_once("):").ok_or_else(|| format!("{name:?} has an invalid hex value"))?;
        let kind = u32::from_str_radix(kind, 16)
            .map_err(|_| format!("{name:?} has an invalid value type {kind:?}"))?;
        (kind, hex)
    } else {
        return Err(format!("{name:?} has a value this reader does not know: {value:?}"));
    };
    let bytes = hex
        .split(',')
        .map(str::trim)
        .filter(|byte| !byte.is_empty())
        .map(|byte| u8::from_str_radix(byte, 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("{name:?} has an invalid hex byte"))?;
    Ok((name, Some(decode(kind, &bytes))))
}

/// The text up to the closing quote, with `\\` and `\"` unescaped, and what
/// follows the quote.
fn read_quoted(text: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((index, char)) = chars.next() {
        match char {
            '"' => return Ok((out, &text[index + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            other => out.push(other),
        }
    }
    Err("a quoted text is not closed".to_owned())
}

/// The policy key's values on this computer; `None` when the key does not
/// exist (an unmanaged computer).
#[cfg(windows)]
pub(super) fn read_machine_policy(
    origin: &str,
) -> Result<Option<Vec<(String, ManagedValue)>>, PolicyError> {
    use winreg::RegKey;
    use winreg::enums::HKEY_LOCAL_MACHINE;

    let unreadable = |source| PolicyError::Unreadable { origin: origin.to_owned(), source };
    let key = match RegKey::predef(HKEY_LOCAL_MACHINE).open_subkey(REGISTRY_KEY) {
        Ok(key) => key,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(unreadable(source)),
    };
    key.enum_values()
        .map(|entry| {
            let (name, value) = entry.map_err(unreadable)?;
            Ok((name, decode(value.vtype as u32, &value.bytes)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
