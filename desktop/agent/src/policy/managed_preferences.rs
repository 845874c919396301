//! The macOS policy: the managed preferences of `org.sealpost.desktop`,
//! which an MDM installs with a configuration profile and macOS keeps in
//! `/Library/Managed Preferences/org.sealpost.desktop.plist`. A
//! `.mobileconfig` profile is read through its Sealpost payload, so a
//! profile can be checked on any computer before it is deployed.

use std::path::Path;

use super::{ManagedValue, PREFERENCES_DOMAIN, PolicyError, insert_managed};

/// The policy settings in the TOML layout; `None` when the file does not
/// exist (an unmanaged computer).
pub(super) fn read(path: &Path, origin: &str) -> Result<Option<toml::Table>, PolicyError> {
    let malformed = |message: String| PolicyError::Malformed { origin: origin.to_owned(), message };
    let value = match plist::Value::from_file(path) {
        Ok(value) => value,
        Err(error) => {
            return match error.into_io() {
                Ok(io) if io.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Ok(source) => Err(PolicyError::Unreadable { origin: origin.to_owned(), source }),
                Err(error) => Err(malformed(format!(
                    "it is not a property list ({error}); a signed profile must be checked unsigned"
                ))),
            };
        }
    };
    let is_profile = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("mobileconfig"));
    let dictionary =
        if is_profile { payload(value) } else { value.into_dictionary() }.ok_or_else(|| {
            malformed(if is_profile {
                format!("the profile has no payload of type {PREFERENCES_DOMAIN}")
            } else {
                "it is not a dictionary of settings".to_owned()
            })
        })?;
    settings(dictionary, origin).map(Some)
}

/// The Sealpost payload of a configuration profile.
fn payload(profile: plist::Value) -> Option<plist::Dictionary> {
    profile
        .into_dictionary()?
        .remove("PayloadContent")?
        .into_array()?
        .into_iter()
        .filter_map(plist::Value::into_dictionary)
        .find(|payload| {
            payload.get("PayloadType").and_then(plist::Value::as_string) == Some(PREFERENCES_DOMAIN)
        })
}

/// The settings from a preferences dictionary; the profile's own `Payload…`
/// keys are not settings.
pub(super) fn settings(
    dictionary: plist::Dictionary,
    origin: &str,
) -> Result<toml::Table, PolicyError> {
    let mut settings = toml::Table::new();
    for (name, value) in dictionary {
        if name.starts_with("Payload") {
            continue;
        }
        insert_managed(&mut settings, &name, convert(value), origin)?;
    }
    Ok(settings)
}

fn convert(value: plist::Value) -> ManagedValue {
    match value {
        plist::Value::String(text) => ManagedValue::Text(text),
        plist::Value::Boolean(on) => ManagedValue::Flag(on),
        plist::Value::Integer(number) => match number.as_signed() {
            Some(number) => ManagedValue::Number(number),
            None => ManagedValue::Other("a number too large".to_owned()),
        },
        plist::Value::Array(items) => items
            .into_iter()
            .map(|item| item.into_string())
            .collect::<Option<Vec<String>>>()
            .map_or_else(
                || ManagedValue::Other("an array of other than strings".to_owned()),
                ManagedValue::List,
            ),
        plist::Value::Real(_) => ManagedValue::Other("a real number".to_owned()),
        plist::Value::Date(_) => ManagedValue::Other("a date".to_owned()),
        plist::Value::Data(_) => ManagedValue::Other("data".to_owned()),
        plist::Value::Dictionary(_) => ManagedValue::Other("a dictionary".to_owned()),
        _ => ManagedValue::Other("an unknown value".to_owned()),
    }
}
