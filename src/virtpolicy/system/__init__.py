"""virtpolicy on a host: ``virtpolicy setup`` puts in place what the Debian
package installs (the systemd unit, the hook as a drop-in, the group and the
user, a settings file) for hosts that install virtpolicy some other way."""
