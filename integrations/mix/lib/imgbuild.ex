defmodule Imgbuild do
  @moduledoc """
  Installs and runs [imgbuild](https://github.com/imgbuild/imgbuild), the daemonless OCI
  image builder for Elixir releases, from Mix.

  ## Configuration

      config :imgbuild,
        version: "0.1.0",
        base_url: "https://example.com/imgbuild/releases/0.1.0"

    * `:version` (required) - the imgbuild version to install and expect.
    * `:base_url` - where the artifacts are served: the archive is fetched from
      `<base_url>/imgbuild-<version>-<target>.tar.gz` and checked against the SHA-256 on its
      line of `<base_url>/checksums.txt`.
    * `:path` - the imgbuild executable to use. When it exists nothing is downloaded;
      otherwise `mix imgbuild.install` downloads to it (needs `:base_url`).
      Default: `_build/imgbuild-<target>`.
    * `:cacerts_path` - a PEM CA bundle for HTTPS downloads. Default: the OTP/system store
      (`:public_key.cacerts_get/0`, OTP 25+).

  `HTTP_PROXY`, `HTTPS_PROXY` (or lower case) and `NO_PROXY` are honoured.

  ## Release step

      releases: [
        my_app: [
          steps: [:assemble, &Imgbuild.release/1],
          imgbuild: [tag: "my_app:1.0", output: "my_app.tar"]
        ]
      ]

  See `release/1`.
  """

  alias Imgbuild.Download

  @release_opts [:tag, :output, :push, :load, :from, :args]

  @doc "The configured imgbuild version (`config :imgbuild, version: ...`)."
  @spec configured_version() :: String.t()
  def configured_version do
    case Application.get_env(:imgbuild, :version) do
      version when is_binary(version) and version != "" ->
        version

      nil ->
        Mix.raise(
          "imgbuild version is not configured; add to config/config.exs: " <>
            "config :imgbuild, version: \"0.1.0\""
        )

      other ->
        Mix.raise(
          "config :imgbuild, version: must be a string such as \"0.1.0\", got: #{inspect(other)}"
        )
    end
  end

  @doc """
  The path of the imgbuild executable: `config :imgbuild, path: ...` when set, else
  `_build/imgbuild-<target>`.
  """
  @spec bin_path() :: String.t()
  def bin_path do
    case Application.get_env(:imgbuild, :path) do
      nil ->
        build_dir =
          if Code.ensure_loaded?(Mix.Project) and Mix.Project.get() do
            Path.dirname(Mix.Project.build_path())
          else
            Path.expand("_build")
          end

        Path.join(build_dir, "imgbuild-#{target()}")

      path when is_binary(path) ->
        Path.expand(path)

      other ->
        Mix.raise("config :imgbuild, path: must be a string, got: #{inspect(other)}")
    end
  end

  @doc """
  The version of the installed executable (the second word of `imgbuild --version`):
  `{:ok, version}`, or `:error` when it is missing or does not answer.
  """
  @spec installed_version() :: {:ok, String.t()} | :error
  def installed_version do
    bin = bin_path()

    with true <- File.regular?(bin),
         {output, 0} <- safe_cmd(bin, ["--version"]),
         ["imgbuild", version | _] <- String.split(output) do
      {:ok, version}
    else
      _ -> :error
    end
  end

  defp safe_cmd(bin, args) do
    System.cmd(bin, args, stderr_to_stdout: true)
  rescue
    e in ErlangError -> {Exception.message(e), 1}
  end

  @doc """
  The Rust target triple of the prebuilt binary for this machine, e.g.
  `x86_64-unknown-linux-gnu`.
  """
  @spec target() :: String.t()
  def target do
    arch_str = to_string(:erlang.system_info(:system_architecture))
    [arch | _] = String.split(arch_str, "-")

    cpu =
      case arch do
        a when a in ["x86_64", "amd64"] -> "x86_64"
        a when a in ["aarch64", "arm64"] -> "aarch64"
        _ -> nil
      end

    linux? = match?({:unix, :linux}, :os.type())

    # The -gnu binaries are static (glibc's static libc), so they run on musl systems such
    # as Alpine too: one archive per architecture.
    if cpu && linux? do
      "#{cpu}-unknown-linux-gnu"
    else
      Mix.raise(
        "imgbuild has no prebuilt binary for this machine (#{arch_str}); " <>
          "install imgbuild yourself and set config :imgbuild, path: \"/path/to/imgbuild\""
      )
    end
  end

  @doc """
  Downloads the configured version for this machine, verifies its SHA-256 against
  `checksums.txt` and puts the executable at `bin_path/0`, atomically.

  With `path:` configured, no `base_url:` and the file present, nothing is downloaded.
  """
  @spec install() :: :ok
  def install do
    version = configured_version()
    bin = bin_path()
    base_url = Application.get_env(:imgbuild, :base_url)
    path_configured? = Application.get_env(:imgbuild, :path) != nil

    cond do
      base_url in [nil, ""] and path_configured? and File.regular?(bin) ->
        Mix.shell().info(
          "Using imgbuild at #{bin} (config :imgbuild, path:); nothing to download"
        )

        check_version(version)

      base_url in [nil, ""] and path_configured? ->
        Mix.raise(
          "imgbuild is not at #{bin} (config :imgbuild, path:); install it there, " <>
            "or set where to download it from: config :imgbuild, base_url: \"https://...\""
        )

      base_url in [nil, ""] ->
        Mix.raise(
          "imgbuild cannot be installed: no download location; add to config/config.exs " <>
            "either config :imgbuild, version: \"#{version}\", base_url: \"https://...\" " <>
            "(serving imgbuild-#{version}-<target>.tar.gz and checksums.txt) " <>
            "or config :imgbuild, version: \"#{version}\", path: \"/usr/local/bin/imgbuild\""
        )

      true ->
        download_and_install(to_string(base_url), version, bin)
        check_version(version)
    end
  end

  defp download_and_install(base_url, version, bin) do
    base_url = String.trim_trailing(base_url, "/")
    target = target()
    name = "imgbuild-#{version}-#{target}"
    archive = "#{name}.tar.gz"
    archive_url = "#{base_url}/#{archive}"
    checksums_url = "#{base_url}/checksums.txt"

    Mix.shell().info("Downloading imgbuild #{version} from #{archive_url}")
    checksums = Download.get!(checksums_url)
    expected = expected_digest!(checksums, archive, checksums_url)
    body = Download.get!(archive_url)
    actual = :crypto.hash(:sha256, body) |> Base.encode16(case: :lower)

    if actual != expected do
      Mix.raise(
        "checksum mismatch for #{archive}: checksums.txt says sha256 #{expected}, " <>
          "the download from #{archive_url} has sha256 #{actual}; nothing was installed"
      )
    end

    dir = Path.dirname(bin)

    case File.mkdir_p(dir) do
      :ok -> :ok
      {:error, reason} -> Mix.raise("cannot create #{dir}: #{:file.format_error(reason)}")
    end

    tmp = Path.join(dir, ".imgbuild-install-#{System.unique_integer([:positive])}")

    try do
      File.rm_rf!(tmp)
      File.mkdir_p!(tmp)
      member = "#{name}/imgbuild"

      case :erl_tar.extract(
             {:binary, body},
             [
               :compressed,
               {:cwd, String.to_charlist(tmp)},
               {:files, [String.to_charlist(member)]}
             ]
           ) do
        :ok ->
          :ok

        {:error, reason} ->
          Mix.raise("cannot unpack #{archive}: #{inspect(reason)}; nothing was installed")
      end

      extracted = Path.join(tmp, member)

      # A regular file itself, not a link to one (a link would be followed by the chmod).
      unless match?({:ok, %File.Stat{type: :regular}}, File.lstat(extracted)) do
        Mix.raise("#{archive} holds no regular file #{member}; nothing was installed")
      end

      File.chmod!(extracted, 0o755)

      case File.rename(extracted, bin) do
        :ok ->
          :ok

        {:error, reason} ->
          Mix.raise("cannot move imgbuild into #{bin}: #{:file.format_error(reason)}")
      end
    after
      File.rm_rf(tmp)
    end

    Mix.shell().info("Installed imgbuild #{version} at #{bin}")
  end

  defp expected_digest!(checksums, archive, checksums_url) do
    checksums
    |> String.split(["\r\n", "\n"], trim: true)
    |> Enum.find_value(fn line ->
      case String.split(line, ~r/\s+/, parts: 2, trim: true) do
        [digest, file] ->
          file = file |> String.trim() |> String.trim_leading("*") |> String.trim_leading("./")
          if file == archive, do: String.downcase(digest)

        _ ->
          nil
      end
    end)
    |> case do
      nil ->
        Mix.raise(
          "#{checksums_url} has no line for #{archive}; refusing to install an unverified download"
        )

      digest ->
        if digest =~ ~r/\A[0-9a-f]{64}\z/ do
          digest
        else
          Mix.raise(
            "#{checksums_url} gives #{inspect(digest)} for #{archive}, not a SHA-256; " <>
              "refusing to install an unverified download"
          )
        end
    end
  end

  @doc """
  Prints a warning when the installed executable's version differs from the configured one.
  Returns `:ok` either way.
  """
  @spec check_version(String.t()) :: :ok
  def check_version(configured \\ configured_version()) do
    case installed_version() do
      {:ok, ^configured} ->
        :ok

      {:ok, installed} ->
        Mix.shell().error(
          "warning: imgbuild #{installed} is installed at #{bin_path()} but " <>
            "config :imgbuild, version: is #{configured}; run `mix imgbuild.install` " <>
            "or change the configured version"
        )

      :error ->
        Mix.shell().error(
          "warning: could not read the version of #{bin_path()} (`imgbuild --version` failed); " <>
            "config :imgbuild, version: is #{configured}"
        )
    end

    :ok
  end

  @doc """
  Runs imgbuild with `args` in the current directory and returns its exit status.
  Its standard output goes to Mix's standard output, its standard error straight to the
  terminal. Raises when the executable is not installed (see `install_and_run/1`).
  """
  @spec run([String.t()]) :: non_neg_integer()
  def run(args) when is_list(args) do
    bin = bin_path()

    unless File.regular?(bin) do
      Mix.raise("imgbuild is not installed at #{bin}; run `mix imgbuild.install`")
    end

    {_, status} =
      System.cmd(bin, args,
        cd: File.cwd!(),
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: false
      )

    status
  end

  @doc """
  Installs imgbuild when it is missing (warning when the installed version differs from the
  configured one), then runs it with `args`; returns the exit status.
  """
  @spec install_and_run([String.t()]) :: non_neg_integer()
  def install_and_run(args) when is_list(args) do
    if File.regular?(bin_path()) do
      check_version()
    else
      install()
    end

    run(args)
  end

  @doc """
  A `mix release` step that builds the image of the release just assembled:

      releases: [
        my_app: [
          steps: [:assemble, &Imgbuild.release/1],
          imgbuild: [tag: "ghcr.io/acme/my_app:1.0", push: true]
        ]
      ]

  It runs `imgbuild build <release path>` in the project root, so `imgbuild.toml` applies,
  with the options under `imgbuild:` mapped to flags: `tag:` (a string or a list) to `-t`,
  `output:` to `-o`, `push: true` to `--push`, `load: true` to `--load`, `from:` to `--from`,
  and `args:` (a list of strings) appended as they are. imgbuild is installed when missing.
  A failed build makes `mix release` fail. Returns the release unchanged.
  """
  @spec release(Mix.Release.t()) :: Mix.Release.t()
  def release(%Mix.Release{} = release) do
    opts = Keyword.get(release.options, :imgbuild, [])

    unless Keyword.keyword?(opts) do
      Mix.raise(
        "releases: [#{release.name}: [imgbuild: ...]] must be a keyword list, got: #{inspect(opts)}"
      )
    end

    case Keyword.keys(opts) -- @release_opts do
      [] ->
        :ok

      unknown ->
        Mix.raise(
          "unknown imgbuild release option(s) #{inspect(unknown)} for release #{release.name}; " <>
            "known: #{inspect(@release_opts)}"
        )
    end

    args = ["build", release.path] ++ release_flags(opts)
    Mix.shell().info([:green, "* imgbuild ", :reset, Enum.join(args, " ")])

    case install_and_run(args) do
      0 ->
        release

      status ->
        Mix.raise(
          "imgbuild build exited with status #{status}; the image of release #{release.name} " <>
            "was not built"
        )
    end
  end

  defp release_flags(opts) do
    Enum.flat_map(opts, fn
      {:tag, tags} when is_list(tags) -> Enum.flat_map(tags, &["-t", to_string(&1)])
      {:tag, tag} -> ["-t", to_string(tag)]
      {:output, out} -> ["-o", Path.expand(to_string(out))]
      {:push, true} -> ["--push"]
      {:push, false} -> []
      {:load, true} -> ["--load"]
      {:load, false} -> []
      {:from, from} -> ["--from", to_string(from)]
      {:args, args} when is_list(args) -> Enum.map(args, &to_string/1)
      {key, value} -> Mix.raise("invalid imgbuild release option #{key}: #{inspect(value)}")
    end)
  end
end
