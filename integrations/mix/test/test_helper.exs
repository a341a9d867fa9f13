defmodule Imgbuild.TestSupport do
  @moduledoc false
  # Helpers shared by the tests: the dist directory under test, a loopback HTTP server
  # (OTP's :inets httpd) that serves it, temp dirs and fixture Mix projects.

  import ExUnit.Assertions

  @doc "The dist directory (scripts/dist output) named by IMGBUILD_DIST_DIR."
  def dist_dir! do
    case System.get_env("IMGBUILD_DIST_DIR") do
      dir when dir in [nil, ""] ->
        raise "IMGBUILD_DIST_DIR is not set: point it at a dist directory (scripts/dist output " <>
                "holding imgbuild-<version>-<target>.tar.gz and checksums.txt), e.g. " <>
                "IMGBUILD_DIST_DIR=/path/to/dist mix test"

      dir ->
        dir = Path.expand(dir)

        unless File.regular?(Path.join(dir, "checksums.txt")) do
          raise "IMGBUILD_DIST_DIR=#{dir} holds no checksums.txt; is it scripts/dist output?"
        end

        dir
    end
  end

  @doc "The archive for this machine in the dist directory: {file name, version}."
  def dist_archive!(dist \\ dist_dir!()) do
    target = Imgbuild.target()
    suffix = "-#{target}.tar.gz"

    case Path.wildcard(Path.join(dist, "imgbuild-*#{suffix}")) do
      [path] ->
        file = Path.basename(path)
        version = file |> String.trim_leading("imgbuild-") |> String.trim_trailing(suffix)
        {file, version}

      other ->
        raise "IMGBUILD_DIST_DIR=#{dist} must hold exactly one imgbuild-<version>#{suffix}, " <>
                "found: #{inspect(Enum.map(other, &Path.basename/1))}"
    end
  end

  @doc "A fresh temp dir, removed when the test ends."
  def tmp_dir!(name) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "imgbuild-mix-#{name}-#{System.unique_integer([:positive])}"
      )

    File.rm_rf!(dir)
    File.mkdir_p!(dir)

    if System.get_env("IMGBUILD_KEEP_TMP") in [nil, ""],
      do: ExUnit.Callbacks.on_exit(fn -> File.rm_rf(dir) end)

    dir
  end

  @doc """
  Serves `doc_root` on 127.0.0.1 with :inets httpd; returns %{url:, log:}. Requests are
  logged (Common Log Format) to the `log` file. Stopped when the test ends.

  With `tls: %{certfile:, keyfile:}` (see `tls_certs!/0`) it serves HTTPS, and the URL is
  `https://localhost:<port>` so that the host name check has a name to match.
  """
  def serve!(doc_root, opts \\ []) do
    {:ok, _} = Application.ensure_all_started(:inets)
    server_root = tmp_dir!("httpd")
    log = Path.join(server_root, "access.log")

    {scheme, host, socket_opts} =
      case Keyword.get(opts, :tls) do
        nil ->
          {"http", "127.0.0.1", []}

        %{certfile: certfile, keyfile: keyfile} ->
          {:ok, _} = Application.ensure_all_started(:ssl)

          ssl = [
            certfile: String.to_charlist(certfile),
            keyfile: String.to_charlist(keyfile)
          ]

          {"https", "localhost", [socket_type: {:ssl, ssl}]}
      end

    {:ok, pid} =
      :inets.start(
        :httpd,
        socket_opts ++
          [
            port: 0,
            bind_address: {127, 0, 0, 1},
            server_name: ~c"localhost",
            server_root: String.to_charlist(server_root),
            document_root: String.to_charlist(doc_root),
            transfer_log: String.to_charlist(log),
            mime_types: [{~c"gz", ~c"application/gzip"}, {~c"txt", ~c"text/plain"}]
          ]
      )

    ExUnit.Callbacks.on_exit(fn -> :inets.stop(:httpd, pid) end)
    port = :httpd.info(pid)[:port]
    %{url: "#{scheme}://#{host}:#{port}", log: log}
  end

  @doc """
  A throwaway CA and a server certificate for `localhost` (DNS:localhost, IP:127.0.0.1)
  signed by it, made with the `openssl` CLI in a temp dir; returns
  %{ca:, certfile:, keyfile:} (PEM file paths).
  """
  def tls_certs! do
    dir = tmp_dir!("tls")

    # Our own config, so the system openssl.cnf's defaults do not matter.
    File.write!(Path.join(dir, "openssl.cnf"), """
    [req]
    distinguished_name = dn
    prompt = no

    [dn]
    CN = imgbuild-mix test

    [ca]
    basicConstraints = critical, CA:TRUE
    keyUsage = critical, keyCertSign, cRLSign
    subjectKeyIdentifier = hash

    [server]
    basicConstraints = critical, CA:FALSE
    keyUsage = critical, digitalSignature, keyEncipherment
    extendedKeyUsage = serverAuth
    subjectAltName = DNS:localhost, IP:127.0.0.1
    authorityKeyIdentifier = keyid
    """)

    openssl!(
      dir,
      ~w(req -config openssl.cnf -x509 -extensions ca -newkey rsa:2048 -nodes) ++
        ~w(-keyout ca.key -out ca.pem -days 2) ++ ["-subj", "/CN=imgbuild-mix test CA"]
    )

    openssl!(
      dir,
      ~w(req -config openssl.cnf -new -newkey rsa:2048 -nodes) ++
        ~w(-keyout server.key -out server.csr -subj /CN=localhost)
    )

    openssl!(
      dir,
      ~w(x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2) ++
        ~w(-days 2 -extfile openssl.cnf -extensions server -out server.pem)
    )

    %{
      ca: Path.join(dir, "ca.pem"),
      certfile: Path.join(dir, "server.pem"),
      keyfile: Path.join(dir, "server.key")
    }
  end

  defp openssl!(dir, args) do
    {out, status} = System.cmd("openssl", args, cd: dir, stderr_to_stdout: true)
    assert status == 0, "openssl #{Enum.join(args, " ")} exited #{status}:\n#{out}"
    out
  end

  @doc "How many GETs of `file` (a file name, or an absolute URL as a proxy sees it) were logged."
  def gets(%{log: log}, file) do
    target = if file =~ ~r{\Ahttps?://}, do: file, else: "/" <> file

    # mod_log writes as the response goes out; give it a moment.
    Process.sleep(200)

    case File.read(log) do
      {:ok, text} ->
        text |> String.split("\n") |> Enum.count(&String.contains?(&1, "\"GET #{target} "))

      {:error, _} ->
        0
    end
  end

  @doc "Runs `mix` with `args` in `dir` with a clean Mix environment plus `env`."
  def mix!(dir, args, env) do
    clean = [
      {"MIX_EXS", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_BUILD_ROOT", nil},
      {"MIX_DEPS_PATH", nil},
      {"MIX_LOCKFILE", nil},
      {"MIX_TARGET", nil}
    ]

    System.cmd("mix", args, cd: dir, env: clean ++ env, stderr_to_stdout: true)
  end

  @doc "Runs `mix` and asserts exit 0, showing its output otherwise."
  def mix_ok!(dir, args, env) do
    {out, status} = mix!(dir, args, env)
    assert status == 0, "mix #{Enum.join(args, " ")} in #{dir} exited #{status}:\n#{out}"
    out
  end

  @doc "The absolute path of this Mix package (integrations/mix)."
  def package_dir, do: Path.expand("..", __DIR__)
end

# Fail loudly, never skip: every test needs the dist directory.
Imgbuild.TestSupport.dist_dir!()
Imgbuild.TestSupport.dist_archive!()

ExUnit.start()
