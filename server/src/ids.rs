//! Typed ids of server-side records.

use std::fmt;

use data_encoding::BASE32_DNSSEC;

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// 128 random bits in lowercase base32hex, like message ids.
            pub fn generate() -> Self {
                Self(BASE32_DNSSEC.encode(&rand::random::<[u8; 16]>()))
            }

            /// Wraps an id read back from storage or a URL; the store checks existence.
            pub fn from_stored(text: String) -> Self {
                Self(text)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id!(
    /// An account: one verified email address.
    AccountId
);
random_id!(
    /// One enrolled device (agent, app or browser session) of an account.
    DeviceId
);
