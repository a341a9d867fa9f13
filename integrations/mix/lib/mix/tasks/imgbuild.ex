defmodule Mix.Tasks.Imgbuild do
  @shortdoc "Runs imgbuild with the given arguments"
  @moduledoc """
  Runs imgbuild in the project root with the given arguments, installing it first when it is
  missing:

      $ mix imgbuild build --from debian:bookworm-slim -t my_app:1.0 -o my_app.tar
      $ mix imgbuild --version

  imgbuild's exit status becomes this task's: a non-zero status stops `mix` with it.
  See `Imgbuild` for the configuration.
  """

  use Mix.Task

  @impl true
  def run(args) do
    case Imgbuild.install_and_run(args) do
      0 -> :ok
      status -> exit({:shutdown, status})
    end
  end
end
