# A server running the module and a client that reaches it over HTTPS; the setup code
# for the first account admin must appear in the server's journal.
{ module }:
{
  name = "sightline";

  nodes.server = {
    imports = [ module ];
    services.sightline = {
      enable = true;
      openFirewall = true;
      settings.http.public_url = "https://server";
    };
  };

  nodes.client = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    start_all()
    server.wait_for_unit("sightline.service")
    server.wait_for_open_port(443)
    server.wait_until_succeeds("journalctl -u sightline.service | grep -q 'Setup code:'")
    client.wait_for_unit("multi-user.target")
    client.succeed("curl --fail --insecure --silent https://server/healthz | grep -q ok")
    client.succeed("curl --fail --insecure --silent https://server/ | grep -q 'Sightline'")
    # The appliance's CA can be fetched to trust the console properly.
    client.succeed("curl --fail --insecure --silent https://server/ca.pem | grep -q 'BEGIN CERTIFICATE'")
  '';
}
