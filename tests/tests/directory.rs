//! The organization's directory of recognised correspondents: admins import
//! it from CSV, list it a page at a time and remove addresses; nobody else
//! sees or changes it.

use sealpost_harness::{TestApp, TestUser};
use sealpost_proto::api::{DirectoryImport, DirectoryPage, ErrorCode, RejectedRow};

async fn app_with_admin() -> (TestApp, TestUser) {
    let app = TestApp::spawn_with(|s| s.admin.emails = vec!["it@example.test".into()]).await;
    let admin = app.register_agent("it@example.test", "it laptop").await;
    (app, admin)
}

async fn page(app: &TestApp, admin: &TestUser, query: &str) -> DirectoryPage {
    app.api
        .get(&format!("/api/v1/admin/directory{query}"), Some(admin.token()))
        .await
        .expect("request")
        .expect_status(200)
        .expect("a page")
        .json()
}

#[tokio::test]
async fn admins_import_a_spreadsheet_and_see_what_was_taken_and_what_was_not() {
    let (app, admin) = app_with_admin().await;
    let export = "\u{feff}Email,Name,Class\r\n\
                  Tim@Alumni.example,Tim Baker,2009\r\n\
                  greg-at-nowhere,Greg,2010\r\n\
                  \"ann@alumni.example\",\"Lee, Ann\",2011\r\n\
                  tim@alumni.example,Timothy Baker,2009\r\n";
    let report: DirectoryImport =
        app.import_directory(&admin, export).await.expect_status(200).expect("200").json();
    assert_eq!((report.added, report.updated, report.unchanged), (2, 0, 0));
    assert_eq!(
        report.rejected,
        [
            RejectedRow { line: 3, reason: "\"greg-at-nowhere\" is not an email address".into() },
            RejectedRow { line: 5, reason: "tim@alumni.example is already on line 2".into() },
        ]
    );

    let listed = page(&app, &admin, "").await;
    assert_eq!(listed.total, 2);
    let entries: Vec<(&str, Option<&str>)> =
        listed.entries.iter().map(|e| (e.email.as_str(), e.name.as_deref())).collect();
    assert_eq!(
        entries,
        [("ann@alumni.example", Some("Lee, Ann")), ("tim@alumni.example", Some("Tim Baker"))]
    );

    // The same file again changes nothing; a new name and a new address do.
    let again: DirectoryImport = app.import_directory(&admin, export).await.json();
    assert_eq!((again.added, again.updated, again.unchanged), (0, 0, 2));
    let update =
        "email,first name,last name\nTIM@alumni.example,Timothy,Baker\nzoe@alumni.example,Zoe,\n";
    let changed: DirectoryImport = app.import_directory(&admin, update).await.json();
    assert_eq!((changed.added, changed.updated, changed.unchanged), (1, 1, 0));
    assert!(changed.rejected.is_empty(), "{:?}", changed.rejected);

    let first = page(&app, &admin, "?limit=2").await;
    let rest = page(&app, &admin, "?offset=2&limit=2").await;
    assert_eq!((first.entries.len(), rest.entries.len(), first.total), (2, 1, 3));
    assert_eq!(first.entries[1].name.as_deref(), Some("Timothy Baker"));
    assert_eq!(rest.entries[0].email, "zoe@alumni.example");

    let removed =
        app.api.delete("/api/v1/admin/directory/Zoe@Alumni.example", Some(admin.token())).await;
    assert_eq!(removed.expect("request").status, 204);
    let gone =
        app.api.delete("/api/v1/admin/directory/zoe@alumni.example", Some(admin.token())).await;
    assert_eq!(gone.expect("request").status, 404);
    assert_eq!(page(&app, &admin, "").await.total, 2);
}

#[tokio::test]
async fn a_file_without_addresses_is_refused_and_only_admins_reach_the_directory() {
    let (app, admin) = app_with_admin().await;
    let refused = app.import_directory(&admin, "name,phone\nTim,555\n").await;
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("`email`"), "{}", refused.text());
    assert_eq!(page(&app, &admin, "").await.total, 0, "nothing stored");

    let member = app.register_agent("member@example.test", "laptop").await;
    for response in [
        app.import_directory(&member, "email\nx@example.org\n").await,
        app.api.get("/api/v1/admin/directory", Some(member.token())).await.expect("request"),
        app.api
            .delete("/api/v1/admin/directory/x@example.org", Some(member.token()))
            .await
            .expect("request"),
    ] {
        assert_eq!(response.status, 403, "{}", response.text());
        assert_eq!(response.error_code(), Some(ErrorCode::Forbidden));
    }
    assert_eq!(app.api.get("/api/v1/admin/directory", None).await.expect("request").status, 401);
}
