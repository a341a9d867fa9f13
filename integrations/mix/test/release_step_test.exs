defmodule Imgbuild.ReleaseStepTest do
  use ExUnit.Case, async: false

  import Imgbuild.TestSupport

  @moduletag timeout: 900_000

  defp base! do
    case System.get_env("IMGBUILD_TEST_BASE") do
      base when base in [nil, ""] ->
        flunk(
          "IMGBUILD_TEST_BASE is not set: give the base image for the release-step test, " <>
            "e.g. IMGBUILD_TEST_BASE=oci:/path/to/base-layout:bookworm (the Rust e2e harness sets it)"
        )

      "oci:" <> rest = base ->
        dir = rest |> String.split(":") |> hd()

        unless File.regular?(Path.join(dir, "index.json")) do
          flunk("IMGBUILD_TEST_BASE=#{base}: #{dir} is not an OCI layout (no index.json)")
        end

        base

      base ->
        base
    end
  end

  defp write_fixture!(app, ctx, base_url, base, tarball) do
    File.mkdir_p!(Path.join(app, "lib/hello_step"))
    File.mkdir_p!(Path.join(app, "config"))

    File.write!(Path.join(app, "mix.exs"), """
    defmodule HelloStep.MixProject do
      use Mix.Project

      def project do
        [
          app: :hello_step,
          version: "0.1.0",
          elixir: "~> 1.14",
          start_permanent: Mix.env() == :prod,
          deps: [{:imgbuild, path: #{inspect(package_dir())}, runtime: false}],
          releases: [
            hello_step: [
              steps: [:assemble, &Imgbuild.release/1],
              imgbuild: [output: #{inspect(tarball)}, tag: "hello-step:1", from: #{inspect(base)}]
            ],
            hello_plain: [applications: [hello_step: :permanent], steps: [:assemble]]
          ]
        ]
      end

      def application do
        [extra_applications: [:logger], mod: {HelloStep.Application, []}]
      end
    end
    """)

    File.write!(Path.join(app, "config/config.exs"), """
    import Config
    config :imgbuild, version: #{inspect(ctx.version)}, base_url: #{inspect(base_url)}
    """)

    File.write!(Path.join(app, "lib/hello_step/application.ex"), """
    defmodule HelloStep.Application do
      use Application

      @impl true
      def start(_type, _args) do
        IO.puts("hello from hello_step")
        Supervisor.start_link([], strategy: :one_for_one, name: HelloStep.Supervisor)
      end
    end
    """)
  end

  defp timed_mix!(app, args, env) do
    {micros, out} = :timer.tc(fn -> mix_ok!(app, args, env) end)
    {div(micros, 1000), out}
  end

  @tag :release_step
  test "the release step builds the image of the release" do
    base = base!()
    dist = dist_dir!()
    {archive, version} = dist_archive!(dist)
    server = serve!(dist)
    app = tmp_dir!("hello_step")
    tarball = Path.join(app, "hello-step.tar")
    write_fixture!(app, %{version: version}, server.url, base, tarball)

    env = [{"MIX_ENV", "prod"}]
    mix_ok!(app, ["compile"], env)

    # First run: the step installs imgbuild (from the loopback server), then builds.
    {cold_ms, out} = timed_mix!(app, ["release", "hello_step", "--overwrite"], env)
    assert out =~ "* imgbuild build #{Path.join(app, "_build/prod/rel/hello_step")}"
    assert out =~ "-t hello-step:1"
    assert gets(server, archive) == 1
    assert File.regular?(Path.join(app, "_build/imgbuild-#{Imgbuild.target()}"))
    assert File.regular?(tarball), "no tarball at #{tarball}; mix release said:\n#{out}"

    {:ok, entries} = :erl_tar.table(String.to_charlist(tarball))
    names = Enum.map(entries, &to_string/1)
    assert "manifest.json" in names, "#{tarball} has no manifest.json: #{inspect(names)}"
    assert "index.json" in names, "#{tarball} has no index.json: #{inspect(names)}"

    case System.get_env("IMGBUILD_STEP_TARBALL") do
      dest when dest in [nil, ""] -> :ok
      dest -> File.cp!(tarball, dest)
    end

    # Timing, binary installed: the same project without the step, then with it.
    {without_ms, _} = timed_mix!(app, ["release", "hello_plain", "--overwrite"], env)
    {with_ms, _} = timed_mix!(app, ["release", "hello_step", "--overwrite"], env)
    assert gets(server, archive) == 1, "the step downloaded imgbuild although it was installed"

    IO.puts(
      "\nrelease-step timing: with=#{with_ms}ms without=#{without_ms}ms " <>
        "(first run, installing imgbuild: #{cold_ms}ms)"
    )

    # A failed build fails `mix release`, naming the status.
    bad_mix =
      String.replace(
        File.read!(Path.join(app, "mix.exs")),
        "from: ",
        "args: [\"--no-such-flag\"], from: "
      )

    File.write!(Path.join(app, "mix.exs"), bad_mix)
    {out, status} = mix!(app, ["release", "hello_step", "--overwrite"], env)
    assert status != 0, "mix release succeeded although imgbuild build failed:\n#{out}"
    assert out =~ "imgbuild build exited with status 2"
  end
end
