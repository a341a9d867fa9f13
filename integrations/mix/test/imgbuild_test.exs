defmodule ImgbuildTest do
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import Imgbuild.TestSupport

  @keys [:version, :base_url, :path, :cacerts_path]

  setup do
    saved = for key <- @keys, do: {key, Application.fetch_env(:imgbuild, key)}
    for key <- @keys, do: Application.delete_env(:imgbuild, key)
    shell = Mix.shell()
    Mix.shell(Mix.Shell.Process)

    on_exit(fn ->
      Mix.shell(shell)

      for {key, value} <- saved do
        case value do
          {:ok, v} -> Application.put_env(:imgbuild, key, v)
          :error -> Application.delete_env(:imgbuild, key)
        end
      end
    end)

    dist = dist_dir!()
    {archive, version} = dist_archive!(dist)
    %{dist: dist, archive: archive, version: version}
  end

  defp configure(opts), do: Enum.each(opts, fn {k, v} -> Application.put_env(:imgbuild, k, v) end)

  # A project-like temp dir; the binary goes to <tmp>/_build/imgbuild.
  defp project_bin!(name) do
    dir = tmp_dir!(name)
    Path.join([dir, "_build", "imgbuild"])
  end

  defp leftovers(bin) do
    dir = Path.dirname(bin)
    if File.dir?(dir), do: File.ls!(dir) -- [Path.basename(bin)], else: []
  end

  defp shell_errors do
    receive do
      {:mix_shell, :error, [msg]} -> [msg | shell_errors()]
    after
      0 -> []
    end
  end

  test "the target and the default bin path" do
    assert Imgbuild.target() =~ ~r/\A(x86_64|aarch64)-unknown-linux-(gnu|musl)\z/
    assert Imgbuild.bin_path() == Path.expand("_build/imgbuild-#{Imgbuild.target()}")
    configure(path: "/opt/imgbuild/bin/imgbuild")
    assert Imgbuild.bin_path() == "/opt/imgbuild/bin/imgbuild"
  end

  test "installs from base_url, runs, and --if-missing downloads nothing", ctx do
    server = serve!(ctx.dist)
    bin = project_bin!("install")
    configure(version: ctx.version, base_url: server.url <> "/", path: bin)

    Mix.Tasks.Imgbuild.Install.run([])

    assert File.regular?(bin)
    assert Bitwise.band(File.stat!(bin).mode, 0o111) != 0, "#{bin} is not executable"
    assert leftovers(bin) == []
    assert Imgbuild.installed_version() == {:ok, ctx.version}
    assert shell_errors() == [], "no version warning expected"
    assert gets(server, ctx.archive) == 1

    out = capture_io(fn -> assert Imgbuild.run(["--version"]) == 0 end)
    assert out =~ "imgbuild #{ctx.version}"

    out = capture_io(fn -> assert Imgbuild.install_and_run(["--version"]) == 0 end)
    assert out =~ "imgbuild #{ctx.version}"

    Mix.Tasks.Imgbuild.Install.run(["--if-missing"])
    assert gets(server, ctx.archive) == 1, "--if-missing downloaded the archive again"
    assert shell_errors() == []

    # Without --if-missing it installs again, over the old binary.
    Mix.Tasks.Imgbuild.Install.run([])
    assert gets(server, ctx.archive) == 2
    assert Imgbuild.installed_version() == {:ok, ctx.version}
    assert leftovers(bin) == []
  end

  test "a wrong digest in checksums.txt installs nothing", ctx do
    root = tmp_dir!("badsums")
    File.ln_s!(Path.join(ctx.dist, ctx.archive), Path.join(root, ctx.archive))
    actual = :crypto.hash(:sha256, File.read!(Path.join(ctx.dist, ctx.archive)))
    actual = Base.encode16(actual, case: :lower)
    wrong = String.duplicate("0", 63) <> "1"
    File.write!(Path.join(root, "checksums.txt"), "#{wrong}  #{ctx.archive}\n")
    server = serve!(root)
    bin = project_bin!("badsums")
    configure(version: ctx.version, base_url: server.url, path: bin)

    error = assert_raise Mix.Error, fn -> Imgbuild.install() end
    assert error.message =~ ctx.archive
    assert error.message =~ wrong
    assert error.message =~ actual
    assert error.message =~ "nothing was installed"
    refute File.exists?(bin)
    assert leftovers(bin) == []

    # No line for the archive at all: refused too, before the archive is fetched.
    File.write!(Path.join(root, "checksums.txt"), "#{actual}  something-else.tar.gz\n")
    error = assert_raise Mix.Error, fn -> Imgbuild.install() end
    assert error.message =~ "no line for #{ctx.archive}"
    refute File.exists?(bin)
    assert leftovers(bin) == []
    assert gets(server, ctx.archive) == 1
  end

  # The failing handshake logs TLS alert notices; show them only if the test fails.
  @tag :capture_log
  test "HTTPS: cacerts_path: trusts a private CA; the system store alone does not", ctx do
    certs = tls_certs!()
    server = serve!(ctx.dist, tls: certs)
    assert server.url =~ ~r{\Ahttps://localhost:\d+\z}
    bin = project_bin!("https")
    configure(version: ctx.version, base_url: server.url, path: bin, cacerts_path: certs.ca)

    Imgbuild.install()
    assert Imgbuild.installed_version() == {:ok, ctx.version}
    assert leftovers(bin) == []
    assert gets(server, ctx.archive) == 1
    out = capture_io(fn -> assert Imgbuild.run(["--version"]) == 0 end)
    assert out =~ "imgbuild #{ctx.version}"

    # Without cacerts_path: the system store, which does not know the test CA.
    File.rm!(bin)
    Application.delete_env(:imgbuild, :cacerts_path)
    error = assert_raise Mix.Error, fn -> Imgbuild.install() end
    assert error.message =~ "cannot download #{server.url}/checksums.txt: TLS handshake failed"
    assert error.message =~ "the system CA store"
    assert error.message =~ "cacerts_path:"
    refute String.contains?(error.message, "\n")
    refute File.exists?(bin)
    assert leftovers(bin) == []
    assert gets(server, ctx.archive) == 1
  end

  test "without base_url and path the error says how to configure", ctx do
    configure(version: ctx.version)
    error = assert_raise Mix.Error, fn -> Imgbuild.install() end
    assert error.message =~ ~s(config :imgbuild, version: "#{ctx.version}", base_url: ")
    assert error.message =~ ~s(path: ")
    refute String.contains?(error.message, "\n")

    error = assert_raise Mix.Error, fn -> Mix.Tasks.Imgbuild.run(["--version"]) end
    assert error.message =~ "base_url"

    Application.delete_env(:imgbuild, :version)
    error = assert_raise Mix.Error, fn -> Imgbuild.install() end
    assert error.message =~ ~s(config :imgbuild, version: ")

    # path: set but nothing there, and nowhere to download from.
    configure(version: ctx.version, path: project_bin!("nopath"))
    error = assert_raise Mix.Error, fn -> Imgbuild.install() end
    assert error.message =~ "is not at"
    assert error.message =~ "base_url"
  end

  test "path: with a binary already there downloads nothing", ctx do
    server = serve!(ctx.dist)
    bin = project_bin!("preinstalled")
    configure(version: ctx.version, base_url: server.url, path: bin)
    Imgbuild.install()
    Application.delete_env(:imgbuild, :base_url)

    Imgbuild.install()
    assert_received {:mix_shell, :info, ["Using imgbuild at " <> _]}
    out = capture_io(fn -> assert Imgbuild.install_and_run(["--version"]) == 0 end)
    assert out =~ ctx.version
    assert gets(server, ctx.archive) == 1
  end

  test "HTTP_PROXY is used, and never for loopback", ctx do
    server = serve!(ctx.dist)
    vars = ~w(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY no_proxy NO_PROXY)
    saved = for var <- vars, do: {var, System.get_env(var)}
    for var <- vars, do: System.delete_env(var)

    on_exit(fn ->
      for {var, value} <- saved,
          do: if(value, do: System.put_env(var, value), else: System.delete_env(var))
    end)

    # The loopback server is the proxy for a host that does not exist: httpd answers
    # absolute-URI requests like a proxy would.
    System.put_env("HTTP_PROXY", server.url)
    bin = project_bin!("proxy")
    configure(version: ctx.version, base_url: "http://imgbuild-dist.invalid/dl", path: bin)
    error = assert_raise Mix.Error, fn -> Imgbuild.install() end
    assert error.message =~ "http://imgbuild-dist.invalid/dl/checksums.txt: HTTP 404"

    configure(base_url: "http://imgbuild-dist.invalid")
    Imgbuild.install()
    assert Imgbuild.installed_version() == {:ok, ctx.version}
    assert gets(server, "http://imgbuild-dist.invalid/#{ctx.archive}") == 1

    # A dead proxy does not matter for a loopback base_url.
    System.put_env("HTTP_PROXY", "http://127.0.0.1:9")
    configure(base_url: server.url)
    Imgbuild.install()
    assert gets(server, ctx.archive) == 1
  end

  test "a version other than the configured one is warned about", ctx do
    server = serve!(ctx.dist)
    bin = project_bin!("mismatch")
    configure(version: ctx.version, base_url: server.url, path: bin)
    Imgbuild.install()
    assert shell_errors() == []

    configure(version: "99.0.0")
    Mix.Tasks.Imgbuild.Install.run(["--if-missing"])
    assert [warning] = shell_errors()
    assert warning =~ "imgbuild #{ctx.version} is installed"
    assert warning =~ "99.0.0"

    capture_io(fn -> assert Imgbuild.install_and_run(["--version"]) == 0 end)
    assert [warning] = shell_errors()
    assert warning =~ ctx.version and warning =~ "99.0.0"
  end

  test "the exit status passes through, in Elixir and from `mix imgbuild`", ctx do
    server = serve!(ctx.dist)
    bin = project_bin!("status")
    configure(version: ctx.version, base_url: server.url, path: bin)
    Imgbuild.install()

    capture_io(fn -> assert Imgbuild.run(["no-such-command"]) == 2 end)

    # A fixture project using this package, run as `mix imgbuild ...` subprocesses.
    app = tmp_dir!("cli-app")

    File.write!(Path.join(app, "mix.exs"), """
    defmodule HelloCli.MixProject do
      use Mix.Project

      def project do
        [app: :hello_cli, version: "0.1.0", deps: [{:imgbuild, path: #{inspect(package_dir())}, runtime: false}]]
      end
    end
    """)

    File.mkdir_p!(Path.join(app, "config"))

    File.write!(Path.join(app, "config/config.exs"), """
    import Config
    config :imgbuild, version: #{inspect(ctx.version)}, path: #{inspect(bin)}
    """)

    env = [{"MIX_ENV", "dev"}]
    mix_ok!(app, ["compile"], env)
    {out, status} = mix!(app, ["imgbuild", "--version"], env)
    assert status == 0, out
    assert out =~ "imgbuild #{ctx.version}"

    {out, status} = mix!(app, ["imgbuild", "no-such-command"], env)
    assert status == 2, "expected clap's status 2 from `mix imgbuild no-such-command`:\n#{out}"
    assert out =~ "no-such-command"
  end
end
