"""``register_service``, ``unregister_service``, ``request`` and ``response`` (§9.5, §9.6).

A request is forwarded under a fresh UUID4 (a requester's own ids may collide with another
requester's, and the provider must not learn them); it stays pending until the provider
answers, the timeout passes, or either side's connection ends. Every request with a usable
``request_id`` gets exactly one ``response``.
"""

from __future__ import annotations

from typing import Any

from . import frames
from .actions import SERVICE_REQUESTS_TOTAL
from .entropy import uuid4
from .names import is_special, is_validator_name, service_name_problem
from .state import Client, Pending, RequestId, Turn, jsonable_id
from .surface import SpaceSurface
from .topic_events import resolve_validation
from .values import is_number, json_size

_NAME_RULE = "service_name must be 1-256 printable characters"


def register_service(space: SpaceSurface, turn: Turn, client: Client, body: dict[str, Any]) -> None:
    settings = space.settings
    name = body.get("service_name")
    problem = service_name_problem(name, settings.max_name_chars)
    if problem is not None:
        space.fail(turn, client, problem, _NAME_RULE, "register_service", body)
        return
    assert isinstance(name, str)
    if is_special(name) and not is_validator_name(name):
        space.fail(turn, client, "forbidden", "reserved service name", "register_service",
                   body)
        return
    provider = space.services.get(name)
    if provider == client.id:
        return
    if provider is not None:
        space.fail(turn, client, "service_taken", "another connection provides this service",
                   "register_service", body)
        return
    if (len(client.services) >= settings.max_services_per_client
            or len(space.services) >= settings.max_services):
        space.fail(turn, client, "too_large", "too many services", "register_service", body)
        return
    space.services[name] = client.id
    client.services[name] = None
    space.version += 1
    space.status(turn, f"service {name} registered by client {client.id}")


def unregister_service(space: SpaceSurface, turn: Turn, client: Client,
                       body: dict[str, Any]) -> None:
    name = body.get("service_name")
    problem = service_name_problem(name, space.settings.max_name_chars)
    if problem is not None:
        space.fail(turn, client, problem, _NAME_RULE, "unregister_service", body)
        return
    assert isinstance(name, str)
    provider = space.services.get(name)
    if provider is None:
        space.fail(turn, client, "service_not_found", "no such service", "unregister_service",
                   body)
        return
    if provider != client.id:
        space.fail(turn, client, "forbidden", "another connection provides this service",
                   "unregister_service", body)
        return
    del space.services[name]
    del client.services[name]
    space.version += 1
    space.status(turn, f"service {name} unregistered")


def _immediate_failure(space: SpaceSurface, client: Client,
                       body: dict[str, Any]) -> tuple[str, str] | None:
    """The first failure of a request before it is forwarded (§9.5's order), or ``None``."""
    settings = space.settings
    name = body.get("service_name")
    problem = service_name_problem(name, settings.max_name_chars)
    if problem is not None:
        return problem, _NAME_RULE
    args = body.get("args")
    if args is not None:
        if type(args) is not dict:
            return "invalid_payload", "args must be an object"
        if json_size(args) > settings.max_args_bytes:
            return "too_large", "args are over the size limit"
    timeout = body.get("timeout")
    if timeout is not None and not (
            is_number(timeout) and settings.min_timeout <= timeout <= settings.max_timeout):
        return "invalid_payload", "timeout must be a number from 1 to 60"
    assert isinstance(name, str)
    if is_special(name):
        return "forbidden", "only the server calls _chatroom/ services"
    if name not in space.services:
        return "service_not_found", "no such service"
    if len(client.requests) >= settings.max_pending_requests:
        return "rate_limited", "too many pending requests"
    return None


def request(space: SpaceSurface, turn: Turn, client: Client, body: dict[str, Any]) -> None:
    request_id = jsonable_id(body.get("request_id"))
    if request_id is None or request_id in client.requests:
        space.fail(turn, client, "invalid_payload",
                   "request_id must be a new string of 1-64 characters or an integer",
                   "request", body)
        return
    failure = _immediate_failure(space, client, body)
    service = body.get("service_name")
    if failure is not None:
        _respond_failure(space, turn, client.id, request_id,
                         service if isinstance(service, str) else None, *failure)
        return
    assert isinstance(service, str)
    timeout = body.get("timeout")
    if timeout is None:
        timeout = space.settings.service_timeout
    args = body.get("args")
    if args is None:
        args = {}
    provider = space.services[service]
    rid = uuid4(turn.rng())
    space.add_pending(Pending(rid, service, provider, turn.now + timeout,
                              requester=client.id, request_id=request_id))
    turn.send((provider,), frames.provider_request(service, args, rid, client.id))


def response(space: SpaceSurface, turn: Turn, client: Client, body: dict[str, Any]) -> None:
    settings = space.settings
    rid = body.get("request_id")
    if not isinstance(rid, str) and type(rid) is not int:
        space.fail(turn, client, "invalid_payload", "request_id must be a string or integer",
                   "response", body)
        return
    error = body.get("error")
    result = body.get("response")
    if error is not None and not isinstance(error, str):
        space.fail(turn, client, "invalid_payload", "error must be a string", "response", body)
        return
    if json_size(error if error is not None else result) > settings.max_response_bytes:
        space.fail(turn, client, "too_large", "the response is over the size limit",
                   "response", body)
        return
    pending = space.pending_for(client, rid)
    if pending is None:
        space.fail(turn, client, "unknown_request", "no such request is pending here",
                   "response", body)
        return
    space.finish_pending(pending.id)
    if pending.is_validation:
        _validator_answer(space, turn, pending, result, error)
    elif error is not None:
        resolve_failure(space, turn, pending, "application_error",
                        error[: settings.max_reason_chars])
    else:
        assert pending.requester is not None and pending.request_id is not None
        space.send(turn, pending.requester, frames.response_ok(pending.request_id, result))
        turn.count(SERVICE_REQUESTS_TOTAL, "ok")


def _validator_answer(space: SpaceSurface, turn: Turn, pending: Pending, result: Any,
                      error: str | None) -> None:
    """``{"valid": true}`` accepts, ``{"valid": false, "reason"?}`` rejects (§9.4)."""
    if error is not None:
        resolve_validation(space, turn, pending, "validator_failed",
                           f"the validator failed: {error}")
        return
    if type(result) is dict:
        valid = result.get("valid")
        reason = result.get("reason")
        if valid is True:
            resolve_validation(space, turn, pending, None, "")
            return
        if valid is False and (reason is None or isinstance(reason, str)):
            resolve_validation(space, turn, pending, "rejected",
                               "unknown" if reason is None else reason)
            return
    resolve_validation(space, turn, pending, "validator_failed",
                       "the validator's answer is not {valid, reason?}")


def resolve_failure(space: SpaceSurface, turn: Turn, pending: Pending, code: str,
                    message: str) -> None:
    """The failed ``response`` of a forwarded request, to its requester."""
    assert pending.requester is not None and pending.request_id is not None
    _respond_failure(space, turn, pending.requester, pending.request_id, pending.service,
                     code, message)


def _respond_failure(space: SpaceSurface, turn: Turn, client_id: int, request_id: RequestId,
                     service: str | None, code: str, message: str) -> None:
    """Seed shape: ``error`` first (its client logs it), then ``response: null`` so that
    the request's callback still runs. Full shape: one ``response`` with ``error``."""
    client = space.clients.get(client_id)
    turn.count(SERVICE_REQUESTS_TOTAL, code)
    if client is None:
        return
    if client.shape == "seed":
        echo: dict[str, Any] = {"request_id": request_id}
        if service is not None:
            echo["service_name"] = service
        turn.send((client_id,), frames.error(code, message, "request", echo))
    turn.send((client_id,), frames.response_failed(request_id, code, message))
