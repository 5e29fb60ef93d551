"""Administration pages through the Flask test client: forms go through the services, refused forms
come back with their inline error (422), non-admins get 403, the header switches tenants."""
from __future__ import annotations

import re

import pytest

from kqi.extensions import db
from kqi.models import Role, User
from tests.conftest import Factory
from tests.test_accounting_audit import run_for, submit


def _csrf(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def browser(app, tenant="default", role=Role.USER, admin=False):
    username, password = Factory(app).user(tenant, role, admin=admin)
    client = app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"username": username, "password": password, "csrf_token": token}).status_code == 302
    client.csrf = _csrf(client.get("/training").get_data(as_text=True))
    return client


def post(client, url, **data):
    return client.post(url, data={"csrf_token": client.csrf, **data})


@pytest.fixture
def admin(sqlite_app):
    return browser(sqlite_app, role=Role.ADMIN, admin=True)


def test_admin_pages_are_for_admins_only(sqlite_app):
    user = browser(sqlite_app)
    for url in ("/admin/tenants", "/admin/users", "/admin/settings", "/admin/monitor", "/admin/usage",
                "/admin/usage.csv", "/admin/audit"):
        assert user.get(url).status_code == 403, url
    assert post(user, "/admin/tenants", name="mine").status_code == 403
    assert "Admin</a>" not in user.get("/training").get_data(as_text=True)


def test_tenants_and_users_are_managed_from_the_pages(sqlite_app, admin):
    assert "Admin</a>" in admin.get("/training").get_data(as_text=True)
    assert post(admin, "/admin/tenants", name="vision", display_name="Vision", gpu="4").status_code == 303
    refused = post(admin, "/admin/tenants", name="Vision!")
    assert refused.status_code == 422 and "lower-case letters" in refused.get_data(as_text=True)
    page = admin.get("/admin/tenants").get_data(as_text=True)
    assert "vision" in page and 'value="4"' in page

    assert post(admin, "/admin/users", username="erin", password="erin-password", tenant="vision",
                role="manager").status_code == 303
    short = post(admin, "/admin/users", username="fred", password="short", tenant="vision", role="user")
    assert short.status_code == 422 and "at least 8" in short.get_data(as_text=True)
    with sqlite_app.app_context():
        erin = db.session.query(User).filter_by(username="erin").one().id
    assert post(admin, f"/admin/users/{erin}", action="password", password="erin-new-password").status_code == 303
    assert post(admin, f"/admin/users/{erin}", action="join", tenant="default", role="user").status_code == 303
    assert post(admin, f"/admin/users/{erin}", action="disable").status_code == 303
    assert post(admin, f"/admin/users/{erin}", action="bogus").status_code == 422
    assert post(admin, "/admin/users/999999", action="disable").status_code == 404
    listing = admin.get("/admin/users?q=erin").get_data(as_text=True)
    assert "vision (manager)" in listing and "default (user)" in listing and "disabled" in listing
    with sqlite_app.app_context():
        assert db.session.get(User, erin).disabled


def test_settings_page_shows_inline_errors(sqlite_app, admin):
    bad = post(admin, "/admin/settings", http_proxy="has space", smtp_port="25", default_cpu="1")
    assert bad.status_code == 422 and "without spaces" in bad.get_data(as_text=True)
    assert post(admin, "/admin/settings", http_proxy="http://proxy:3128").status_code == 303
    assert 'value="http://proxy:3128"' in admin.get("/admin/settings").get_data(as_text=True)
    bad = post(admin, "/admin/settings", max_log_gb="0", max_output_gb="50")
    assert bad.status_code == 422 and "max_log_gb must be at least 0.001" in bad.get_data(as_text=True)
    assert post(admin, "/admin/settings", max_log_gb="2.5", max_output_gb="100").status_code == 303
    page = admin.get("/admin/settings").get_data(as_text=True)
    assert 'name="max_log_gb" value="2.5"' in page and 'name="max_output_gb" value="100"' in page


def test_monitor_kill_usage_chart_csv_and_audit_pages(sqlite_app, admin):
    api = Factory(sqlite_app).api("team-x")
    running = submit(api, "monitored")
    run_for(sqlite_app, running, hours=1, status=None)
    ended = submit(api, "ended")
    run_for(sqlite_app, ended, hours=2, node_name="n2")

    monitor = admin.get("/admin/monitor").get_data(as_text=True)
    assert f"#{running} monitored" in monitor and "team-x" in monitor
    fragment = admin.get("/admin/monitor", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and "monitored" in fragment
    killed = admin.post(f"/admin/monitor/kill/{running}", headers={"HX-Request": "true", "X-CSRFToken": admin.csrf})
    assert killed.status_code == 200 and "stopping…" in killed.get_data(as_text=True)

    usage = admin.get("/admin/usage?period=all&group=user").get_data(as_text=True)
    assert "<svg" in usage and "team-x" in usage
    assert admin.get("/admin/usage?period=decade").status_code == 422
    csv_text = admin.get("/admin/usage.csv?period=all").get_data(as_text=True)
    assert csv_text.splitlines()[1].startswith("all,team-x,,1,")

    audit = admin.get("/admin/audit?action=kill").get_data(as_text=True)
    assert "page:admin_kill" in audit and f"/admin/monitor/kill/{running}" in audit
    assert admin.get("/admin/audit?since=never").status_code == 200  # inline error, not a crash
    assert "must be a date" in admin.get("/admin/audit?since=never").get_data(as_text=True)


def test_header_switches_tenant_and_managers_manage_members(sqlite_app):
    factory = Factory(sqlite_app)
    manager = browser(sqlite_app, "team-a", Role.MANAGER)
    with sqlite_app.app_context():
        from kqi.accounts import auth as accounts

        user = db.session.query(User).order_by(User.id.desc()).first()
        accounts.add_membership(db.session, user, accounts.get_or_create_tenant(db.session, "team-b"), Role.USER)
        db.session.commit()
    page = manager.get("/training").get_data(as_text=True)
    assert 'aria-label="current tenant"' in page and "Members</a>" in page
    assert post(manager, "/account/tenant", tenant="team-b", next="/training").status_code == 303
    page = manager.get("/training").get_data(as_text=True)
    assert re.search(r'<option value="team-b" selected', page) and "Members</a>" not in page
    assert manager.get("/tenant/members").status_code == 403  # a plain user in team-b
    assert post(manager, "/account/tenant", tenant="team-c").status_code == 403
    post(manager, "/account/tenant", tenant="team-a")

    other, _ = factory.user("team-z")
    assert post(manager, "/tenant/members", username=other, role="user").status_code == 303
    members = manager.get("/tenant/members").get_data(as_text=True)
    assert other in members and "Usage per member" in members
    assert post(manager, "/tenant/members", username="nobody-here", role="user").status_code == 422
    with sqlite_app.app_context():
        other_id = db.session.query(User).filter_by(username=other).one().id
    assert post(manager, "/tenant/members", action="remove", user_id=str(other_id)).status_code == 303
    assert other not in manager.get("/tenant/members").get_data(as_text=True)


def test_notifications_page_never_shows_the_webhook(sqlite_app):
    user = browser(sqlite_app)
    assert post(user, "/account/notifications", webhook_url="https://hooks.example/T0/SECRET",
                email="me@example.org").status_code == 303
    page = user.get("/account/notifications").get_data(as_text=True)
    assert "SECRET" not in page and "one is set" in page and 'value="me@example.org"' in page
    assert post(user, "/account/notifications", email="nope").status_code == 422
    assert post(user, "/account/notifications", webhook_off="1", email="").status_code == 303
    assert "none set" in user.get("/account/notifications").get_data(as_text=True)
