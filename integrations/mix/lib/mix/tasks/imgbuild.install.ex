defmodule Mix.Tasks.Imgbuild.Install do
  @shortdoc "Installs imgbuild"
  @moduledoc """
  Downloads the configured imgbuild version for this machine, verifies its SHA-256 against
  the release's `checksums.txt`, and installs it at `Imgbuild.bin_path/0`:

      $ mix imgbuild.install
      $ mix imgbuild.install --if-missing

  `--if-missing` does nothing when the executable is already there (it warns when its
  version differs from the configured one). See `Imgbuild` for the configuration.
  """

  use Mix.Task

  @impl true
  def run(args) do
    case OptionParser.parse(args, strict: [if_missing: :boolean]) do
      {opts, [], []} ->
        if opts[:if_missing] && File.regular?(Imgbuild.bin_path()) do
          Imgbuild.check_version()
        else
          Imgbuild.install()
        end

      _ ->
        Mix.raise(
          "invalid arguments to mix imgbuild.install: #{Enum.join(args, " ")}; " <>
            "usage: mix imgbuild.install [--if-missing]"
        )
    end
  end
end
