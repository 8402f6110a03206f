# For the grit-token test in check.sh: the admin's own token secret, which
# may be readable by root alone.
{
  imports = [ ./token-default.nix ];
  services.grit.server.tokenSecretFile = "/run/secrets/grit-token-secret";
}
