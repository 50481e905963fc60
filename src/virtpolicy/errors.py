"""The exception tree of virtpolicy.

Every error a user can see derives from :class:`VirtpolicyError`. Each class
carries the process exit status the CLI uses for it and the HTTP status the API
will map it to, so the interfaces translate errors by walking the class
hierarchy instead of keeping tables of their own.

Exit statuses: 0 ok, 1 operation failed, 2 bad usage or invalid policy,
3 conflict.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_CONFLICT = 3


class VirtpolicyError(Exception):
    """Root of every error virtpolicy reports to a person."""

    exit_code: int = EXIT_FAILED
    http_status: int = 500


class PolicyError(VirtpolicyError, ValueError):
    """A policy (or a request to change one) is invalid; nothing was written.

    ``field`` is the dotted path of the offending field (``cpu.vcpupin[1]``)
    when one is known. The message already names field and value; ``field`` is
    kept separately for machine consumers such as the API.

    It also derives from :class:`ValueError` so that validators of the model
    may raise it and pydantic reports it in place.
    """

    exit_code = EXIT_INVALID
    http_status = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CpusetError(PolicyError):
    """A cpuset string does not follow libvirt's syntax."""

    def __init__(self, text: str, reason: str, position: int) -> None:
        super().__init__(f'"{text}" is not a cpuset: {reason} (at {position})')
        self.text = text
        self.reason = reason
        self.position = position


class CycleError(PolicyError):
    """The dependency graph would contain a cycle; ``cycle`` lists it, closed.

    Over HTTP a conflict (409): a policy that is valid alone, whose
    dependencies close a cycle with what is stored."""

    http_status = 409

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle), field="requires")
        self.cycle = cycle


class DocumentError(PolicyError):
    """A policy file cannot be read as policy documents."""


class BodyTooLargeError(PolicyError):
    """A request body is over the API's limit; it was not read whole."""

    http_status = 413

    def __init__(self, message: str) -> None:
        super().__init__(message, field="body")


class UnsupportedMediaTypeError(PolicyError):
    """A request body of a type the route does not read (JSON, or YAML where documented)."""

    http_status = 415


class StoreError(VirtpolicyError):
    """The policy store failed to read or write."""


class StoreBusyError(StoreError):
    """Another process holds the store's write lock longer than a write waits."""

    http_status = 503
    #: Seconds after which the same request may well succeed (``Retry-After``).
    retry_after = 2


class StoreUnavailableError(StoreError):
    """The store's database does not answer (down, restarting, unreachable)."""

    http_status = 503
    retry_after = 5


class BrokenPolicyError(StoreError):
    """The stored policy of a guest no longer validates (written by an older
    version, or by hand): it is not enforced, and can only be replaced whole
    or deleted."""

    http_status = 409

    def __init__(self, guest: str, revision: int, reason: str) -> None:
        super().__init__(
            f"{guest}: the stored policy (revision {revision}) no longer loads: {reason}; "
            "replace it whole (apply -f, PUT) or delete it"
        )
        self.guest = guest
        self.revision = revision
        self.reason = reason


class NotFoundError(StoreError):
    """The guest, or the revision asked for, does not exist in the store."""

    http_status = 404


class ConflictError(StoreError):
    """A write said "only if the current revision is N" and it is not."""

    exit_code = EXIT_CONFLICT
    http_status = 409

    def __init__(self, guest: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{guest}: revision is {actual}, not {expected}: "
            "someone else changed it; read it again and retry"
        )
        self.guest = guest
        self.expected = expected
        self.actual = actual


class TokenExistsError(StoreError):
    """A token of that name exists already."""

    exit_code = EXIT_CONFLICT
    http_status = 409


class RefusedError(VirtpolicyError):
    """The request would break a policy (a destination refuses a migration):
    refused before anything was done."""

    exit_code = EXIT_CONFLICT
    http_status = 409


class AuthError(VirtpolicyError):
    """No credentials, or credentials that do not identify anyone."""

    http_status = 401


class ForbiddenError(VirtpolicyError):
    """Identified, but the role does not allow this (or the socket is read-only)."""

    http_status = 403

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PreconditionFailedError(ConflictError):
    """An If-Match header named a revision that is no longer current."""

    http_status = 412


class ConfigError(VirtpolicyError):
    """A setting is invalid; the message names the key and the value."""

    exit_code = EXIT_INVALID


class ConditionError(VirtpolicyError):
    """A dependency's condition did not hold within its timeout."""


class BlockingCallError(VirtpolicyError):
    """A blocking call was made on the event loop's thread (see loopguard)."""


class HypervisorError(VirtpolicyError):
    """libvirt refused or failed an operation; the message names guest and operation."""

    http_status = 502


class UnsupportedError(HypervisorError):
    """The driver or host cannot do this (e.g. a cap on the test driver)."""

    http_status = 501


class UnknownStateError(VirtpolicyError):
    """The daemon cannot tell (a dependency's host is lost, the fleet's state is
    stale): the hook then follows its hook_failure mode."""

    http_status = 503


class ConnectionLostError(HypervisorError):
    """The libvirt connection is gone (libvirtd restarted or crashed)."""

    http_status = 503


class GuestNotFoundError(HypervisorError):
    """libvirt knows no domain of that name on this connection."""

    http_status = 404


class DaemonUnreachableError(VirtpolicyError):
    """No daemon answers where the command looked for one."""


class HookInstallError(VirtpolicyError):
    """libvirt's hook could not be installed or removed."""


class RemoteError(VirtpolicyError):
    """An error the daemon answered with. The exit status is that of the error class
    the answer names (``error.type``), found in this module; for a type this
    version does not know, the HTTP status decides between invalid (4xx) and
    failed."""

    def __init__(self, message: str, http_status: int, kind: str = "") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.kind = kind
        known = globals().get(kind)
        if isinstance(known, type) and issubclass(known, VirtpolicyError):
            self.exit_code = known.exit_code
        elif http_status in (400, 413, 422):
            self.exit_code = EXIT_INVALID
