defmodule Imgbuild.MixProject do
  use Mix.Project

  @version "0.1.0"
  @source_url "https://github.com/imgbuild/imgbuild"

  def project do
    [
      app: :imgbuild,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: false,
      deps: [],
      description:
        "Mix tasks and a release step that install and run imgbuild, " <>
          "the daemonless OCI image builder for Elixir releases",
      package: [
        licenses: ["Apache-2.0"],
        links: %{"Source" => @source_url},
        files: ~w(lib mix.exs README.md .formatter.exs)
      ],
      docs: [main: "Imgbuild", source_url: @source_url]
    ]
  end

  def application do
    [extra_applications: [:logger, :inets, :ssl, :public_key, :crypto]]
  end
end
