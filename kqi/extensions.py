"""Flask extensions, created unbound and initialised in create_app()."""
from collections.abc import Callable
from contextlib import AbstractContextManager

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()

# Opens one app's context, in which `db.session` is that app's session. The app factory hands
# `app.app_context` to what works on threads of its own (the scheduler loop, the notifier, the audit
# writer), so that they need nothing else of Flask.
AppContext = Callable[[], AbstractContextManager[object]]
