"""Accounts: who someone is (passwords, API tokens, the principal of a request), users and
memberships, and the login rate limit."""
