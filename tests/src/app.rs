//! [`TestApp`]: the real server in this process, on port 0, over TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sealpost_proto::api::{
    CodeRequest, CreateAccount, DeliveryReport, DeviceCredential, DeviceTokens, EnrollDevice,
    MaskedMail, MaskedMailSent, RelayLog, StoredMessage, WellKnown,
};
use sealpost_proto::verification::find_code;
use sealpost_relay::{Relay, RelayConfig, Security, SendError, TrustedRoots};
use sealpost_server::clock::Clock;
use sealpost_server::lifecycle::Purger;
use sealpost_server::outbox::Outbox;
use sealpost_server::settings::{Settings, SmtpSecurity};
use sealpost_server::{Application, install_crypto_provider};
use tempfile::TempDir;

use crate::client::{ApiClient, ApiResponse};
use crate::mail_capture::MailCapture;
use crate::mailstack::MailStack;
use crate::postgres::PostgresServer;

/// Set to `postgres` to run every [`TestApp`] on a PostgreSQL server of
/// its own instead of the embedded SQLite store: `cargo xtask test` runs
/// the API tests both ways.
pub const DATABASE_ENV: &str = "SEALPOST_TEST_DATABASE";

/// Whether [`DATABASE_ENV`] asks for PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(DATABASE_ENV).is_ok_and(|value| value == "postgres")
}

/// One server with its own data directory and database, and a mail capture
/// that its automated mail goes to. Stops when dropped.
pub struct TestApp {
    pub api: ApiClient,
    pub origin: String,
    pub base_url: String,
    pub mail: MailCapture,
    /// The real mail stack, when the server relays through it.
    pub mailstack: Option<Arc<MailStack>>,
    pub clock: Clock,
    /// The notification outbox; with `outbox.worker = false` tests step it.
    pub outbox: Outbox,
    /// Deletes expired and recalled content when stepped.
    pub purger: Purger,
    /// The SMTP listener, when `inbound.listen` was set.
    pub inbound_addr: Option<std::net::SocketAddr>,
    /// The DKIM TXT record `(name, value)` when DKIM is configured.
    pub dkim_record: Option<(String, String)>,
    pub data_dir: PathBuf,
    pub cert_pem: Vec<u8>,
    /// The PostgreSQL server the store is on, when tests run on PostgreSQL
    /// ([`DATABASE_ENV`]); dropped after the server stops.
    pub postgres: Option<PostgresServer>,
    /// Stops the server; called on drop.
    stop: Box<dyn Fn() + Send + Sync>,
    _dir: TempDir,
}

/// A user with an enrolled device.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub email: String,
    pub tokens: DeviceTokens,
}

impl TestUser {
    pub fn token(&self) -> &str {
        &self.tokens.access_token
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server whose settings `configure` may change first. Its mail
    /// goes to a [`MailCapture`].
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::start(None, configure).await
    }

    /// Starts a server whose mail goes through the real stack's Postfix into
    /// Dovecot: every address it mails must be one of the stack's users.
    pub async fn spawn_on(stack: Arc<MailStack>, configure: impl FnOnce(&mut Settings)) -> Self {
        Self::start(Some(stack), configure).await
    }

    async fn start(
        mailstack: Option<Arc<MailStack>>,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mail = MailCapture::start().await.expect("mail capture listener");
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".parse().expect("address");
        settings.server.data_dir = dir.path().join("data");
        settings.smtp.host = Some("127.0.0.1".into());
        settings.smtp.port = match &mailstack {
            Some(stack) => stack.smtp_addr().port(),
            None => mail.port(),
        };
        settings.smtp.security = SmtpSecurity::None;
        settings.smtp.from_address = "sealpost@example.test".into();
        settings.branding.organization_name = "Example Clinic".into();
        settings.branding.footer = "Sent by Example Clinic, 1 Test Street, Testville".into();
        configure(&mut settings);
        let postgres = match settings.database.url {
            None if on_postgres() => {
                let server = PostgresServer::start().await.expect("PostgreSQL for the test");
                settings.database.url = Some(server.url());
                Some(server)
            }
            _ => None,
        };
        settings.validate().expect("test settings are valid");
        let data_dir = settings.server.data_dir.clone();

        let app = Application::build(settings).await.expect("server starts");
        let base_url = format!("https://127.0.0.1:{}", app.local_addr().port());
        let origin = app.origin().to_owned();
        let clock = app.clock();
        let outbox = app.outbox();
        let purger = app.purger();
        let inbound_addr = app.inbound_addr();
        let dkim_record = app.dkim_record();
        let cert_pem = std::fs::read(&app.tls().cert_file).expect("server certificate");
        let server_handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let api = ApiClient::new(&base_url, &cert_pem).expect("HTTPS client");
        Self {
            api,
            origin,
            base_url,
            mail,
            mailstack,
            clock,
            outbox,
            purger,
            inbound_addr,
            dkim_record,
            data_dir,
            cert_pem,
            postgres,
            stop: Box::new(move || server_handle.shutdown()),
            _dir: dir,
        }
    }

    pub async fn well_known(&self) -> WellKnown {
        self.api.get("/.well-known/sealpost", None).await.expect("request").json()
    }

    pub async fn request_code(&self, email: &str) -> ApiResponse {
        self.api
            .post_json("/api/v1/verification-codes", &CodeRequest { email: email.into() }, None)
            .await
            .expect("request")
    }

    /// Requests a code for `email` and reads it from the email: in the
    /// recipient's Dovecot INBOX on the real stack, else from the capture.
    pub async fn code_for(&self, email: &str) -> String {
        if let Some(stack) = &self.mailstack {
            return self
                .api
                .code_via_inbox(stack, &self.origin, email)
                .await
                .unwrap_or_else(|error| panic!("no verification code for {email}: {error:#}"));
        }
        let before = self.mail.messages().await.len();
        let response = self.request_code(email).await;
        assert_eq!(response.status, 202, "code request refused: {}", response.text());
        let origin = self.origin.clone();
        let mail = self
            .mail
            .wait_for(email, Duration::from_secs(10), |_| true)
            .await
            .unwrap_or_else(|| panic!("no verification email reached {email}"));
        assert!(self.mail.messages().await.len() > before);
        find_code(&mail.data, &origin).unwrap_or_else(|| {
            panic!("no code in the verification email: {}", String::from_utf8_lossy(&mail.data))
        })
    }

    pub async fn enroll(
        &self,
        email: &str,
        device_name: &str,
        credential: DeviceCredential,
    ) -> ApiResponse {
        let request =
            EnrollDevice { email: email.into(), device_name: device_name.into(), credential };
        self.api.post_json("/api/v1/devices", &request, None).await.expect("request")
    }

    /// Registers the way the desktop agent does: code by email, then a device.
    pub async fn register_agent(&self, email: &str, device_name: &str) -> TestUser {
        let code = self.code_for(email).await;
        let response = self.enroll(email, device_name, DeviceCredential::Code(code)).await;
        assert_eq!(response.status, 201, "enrollment refused: {}", response.text());
        TestUser { email: email.to_owned(), tokens: response.json() }
    }

    /// Creates a password account (as the Secure Message Center's people
    /// have), proving the address with a code first.
    pub async fn create_password_account(&self, email: &str, name: &str, password: &str) {
        let code = self.code_for(email).await;
        let request = CreateAccount {
            email: email.into(),
            code,
            password: password.into(),
            display_name: Some(name.into()),
        };
        let response =
            self.api.post_json("/api/v1/accounts", &request, None).await.expect("request");
        assert_eq!(response.status, 201, "account refused: {}", response.text());
    }

    pub async fn store_message(
        &self,
        sender: &TestUser,
        recipients: &[&str],
        mime: Vec<u8>,
    ) -> StoredMessage {
        let response = self.api.upload(sender.token(), recipients, mime).await.expect("request");
        assert_eq!(response.status, 201, "upload refused: {}", response.text());
        response.json()
    }

    /// Stores a message and asks the server to mail its notifications.
    pub async fn store_and_notify(
        &self,
        token: &str,
        recipients: &[&str],
        mime: Vec<u8>,
    ) -> StoredMessage {
        let response =
            self.api.upload_with(token, recipients, mime, true).await.expect("upload request");
        assert_eq!(response.status, 201, "upload refused: {}", response.text());
        response.json()
    }

    pub async fn content(&self, token: Option<&str>, message_id: &str) -> ApiResponse {
        self.api
            .get(&format!("/api/v1/messages/{message_id}/content"), token)
            .await
            .expect("request")
    }

    /// `GET /api/v1/messages/{id}/deliveries` as `token`'s caller: the delivery slip.
    pub async fn deliveries(&self, token: &str, message_id: &str) -> DeliveryReport {
        self.api
            .get(&format!("/api/v1/messages/{message_id}/deliveries"), Some(token))
            .await
            .expect("request")
            .expect_status(200)
            .expect("the delivery slip")
            .json()
    }

    /// `POST /api/v1/masked-mail` as `token`'s caller, which must succeed.
    pub async fn send_masked(&self, token: &str, mail: &MaskedMail) -> MaskedMailSent {
        self.api
            .post_json("/api/v1/masked-mail", mail, Some(token))
            .await
            .expect("request")
            .expect_status(200)
            .expect("masked mail queued")
            .json()
    }

    /// The newest `limit` decisions of `GET /api/v1/admin/relay-log`, as an admin.
    pub async fn relay_log(&self, admin_token: &str, limit: u32) -> RelayLog {
        self.api
            .get(&format!("/api/v1/admin/relay-log?limit={limit}"), Some(admin_token))
            .await
            .expect("request")
            .expect_status(200)
            .expect("the relay log")
            .json()
    }

    /// A password account with a name (as members have) and a device
    /// enrolled with the password.
    pub async fn named_user(&self, email: &str, name: &str) -> TestUser {
        let password = "correct horse battery staple";
        self.create_password_account(email, name, password).await;
        let credential = DeviceCredential::Password(password.into());
        let response = self.enroll(email, "laptop", credential).await;
        assert_eq!(response.status, 201, "enrollment refused: {}", response.text());
        TestUser { email: email.to_owned(), tokens: response.json() }
    }

    /// `POST /api/v1/admin/directory/import` with a CSV file.
    pub async fn import_directory(&self, admin: &TestUser, csv: &str) -> ApiResponse {
        let request = self
            .api
            .http()
            .post(self.api.url("/api/v1/admin/directory/import"))
            .bearer_auth(admin.token())
            .header("content-type", "text/csv")
            .body(csv.to_owned());
        self.api.send(request).await.expect("request")
    }

    /// Hands `email` to the SMTP listener over STARTTLS, as the front MTA
    /// does; returns the listener's final answer or refusal.
    pub async fn deliver_inbound(
        &self,
        envelope_sender: &str,
        recipients: &[&str],
        email: &[u8],
    ) -> Result<String, SendError> {
        let address = self.inbound_addr.expect("the SMTP listener is on (inbound.listen)");
        let relay = Relay::new(&RelayConfig {
            host: "localhost".into(),
            port: address.port(),
            security: Security::StartTls,
            credentials: None,
            timeout: Duration::from_secs(10),
            roots: TrustedRoots::Only(self.cert_pem.clone()),
        })
        .expect("SMTP client");
        relay.send_raw(envelope_sender, recipients, email).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        (self.stop)();
    }
}
