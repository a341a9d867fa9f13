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
  """
  def serve!(doc_root) do
    {:ok, _} = Application.ensure_all_started(:inets)
    server_root = tmp_dir!("httpd")
    log = Path.join(server_root, "access.log")

    {:ok, pid} =
      :inets.start(:httpd,
        port: 0,
        bind_address: {127, 0, 0, 1},
        server_name: ~c"localhost",
        server_root: String.to_charlist(server_root),
        document_root: String.to_charlist(doc_root),
        transfer_log: String.to_charlist(log),
        mime_types: [{~c"gz", ~c"application/gzip"}, {~c"txt", ~c"text/plain"}]
      )

    ExUnit.Callbacks.on_exit(fn -> :inets.stop(:httpd, pid) end)
    port = :httpd.info(pid)[:port]
    %{url: "http://127.0.0.1:#{port}", log: log}
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
