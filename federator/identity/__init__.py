"""Identity: users, projects and roles from the configuration, passwords, API tokens.

A Keystone v3 subset, enough for the OpenStack clients: password authentication scoped to
a project issues a token; every other API call carries it in ``X-Auth-Token``.
"""
