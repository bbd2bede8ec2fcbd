"""/identity: a Keystone v3 subset. Version discovery, and tokens: issue (password,
project scope), validate and revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from federator.api.deps import AUTH_HEADER, IDENTITY_PREFIX, BrokerDep, RootUrlDep, TokenDep
from federator.api.schemas import AuthBody, DomainRefBody
from federator.api.views import identity_version, token_view
from federator.exception import BadRequest, Unauthorized
from federator.identity.service import BAD_CREDENTIALS, DomainRef, PasswordAuth

router = APIRouter(prefix=IDENTITY_PREFIX, tags=["identity"])
SUBJECT_HEADER = "X-Subject-Token"


@router.get("", status_code=300)
@router.get("/", status_code=300, include_in_schema=False)
def versions(root: RootUrlDep) -> JSONResponse:
    return JSONResponse({"versions": {"values": [identity_version(root)]}}, status_code=300)


@router.get("/v3")
@router.get("/v3/", include_in_schema=False)
def version(root: RootUrlDep) -> dict[str, Any]:
    return {"version": identity_version(root)}


def _domain(body: DomainRefBody | None) -> DomainRef:
    return DomainRef() if body is None else DomainRef(id=body.id, name=body.name)


def _password_auth(body: AuthBody) -> PasswordAuth:
    ident = body.auth.identity
    if "password" not in ident.methods or ident.password is None:
        # Tokens, application credentials, TOTP...: only passwords are supported.
        raise Unauthorized(reason=BAD_CREDENTIALS)
    user = ident.password.user
    if user.id is None and user.name is None:
        raise BadRequest(
            "give the user's id or name",
            problems=[{"field": "auth.identity.password.user", "message": "id or name required"}],
        )
    scope = body.auth.scope
    project = None
    if scope is not None and scope != "unscoped":
        if scope.domain is not None or scope.system is not None or scope.project is None:
            raise BadRequest(
                "only project scope is supported",
                problems=[{"field": "auth.scope", "message": "give a project"}],
            )
        project = scope.project
    return PasswordAuth(
        password=user.password,
        user_id=user.id,
        user_name=user.name,
        user_domain=_domain(user.domain),
        project_id=project.id if project else None,
        project_name=project.name if project else None,
        project_domain=_domain(project.domain) if project else DomainRef(),
    )


@router.post("/v3/auth/tokens", status_code=201)
def issue_token(body: AuthBody, broker: BrokerDep, root: RootUrlDep) -> JSONResponse:
    """Password authentication scoped to a project (the user's own when none is named).
    The token is in the ``X-Subject-Token`` header; every failure is one generic 401."""
    token, info = broker.identity.authenticate(_password_auth(body))
    return JSONResponse(
        token_view(info, root, broker.identity.region),
        status_code=201,
        headers={SUBJECT_HEADER: token},
    )


def _subject(request: Request) -> str | None:
    return request.headers.get(SUBJECT_HEADER)


@router.get("/v3/auth/tokens")
def validate_token(
    request: Request, caller: TokenDep, broker: BrokerDep, root: RootUrlDep
) -> JSONResponse:
    """The token in ``X-Subject-Token``: for an admin, or for the token itself."""
    subject = _subject(request)
    info = broker.identity.inspect(caller, request.headers[AUTH_HEADER], subject)
    return JSONResponse(
        token_view(info, root, broker.identity.region),
        headers={SUBJECT_HEADER: subject or ""},
    )


@router.head("/v3/auth/tokens", include_in_schema=False)
def check_token(request: Request, caller: TokenDep, broker: BrokerDep) -> Response:
    broker.identity.inspect(caller, request.headers[AUTH_HEADER], _subject(request))
    return Response(status_code=200)


@router.delete("/v3/auth/tokens", status_code=204)
def revoke_token(request: Request, caller: TokenDep, broker: BrokerDep) -> Response:
    """Revoke the token in ``X-Subject-Token``: an admin any token, others their own."""
    broker.identity.revoke(caller, request.headers[AUTH_HEADER], _subject(request))
    return Response(status_code=204)
