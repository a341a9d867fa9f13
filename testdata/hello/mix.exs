defmodule Hello.MixProject do
  use Mix.Project

  # HELLO_WITH_CRYPTO=1 builds a variant whose boot loads :crypto (needs libcrypto.so.3).
  @crypto if System.get_env("HELLO_WITH_CRYPTO") in ["1", "true"], do: [:crypto], else: []
  # HELLO_WITH_SSL=1: a variant that uses :ssl (TLS clients need the CA bundle).
  @ssl if System.get_env("HELLO_WITH_SSL") in ["1", "true"], do: [:ssl], else: []

  def project do
    [
      app: :hello,
      version: System.get_env("HELLO_VERSION", "0.1.0"),
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [],
      # HELLO_NO_ERTS=1: a release without ERTS, for a base that has Erlang.
      releases: [
        hello: [
          include_executables_for: [:unix],
          strip_beams: true,
          include_erts: System.get_env("HELLO_NO_ERTS") not in ["1", "true"]
        ]
      ]
    ]
  end

  def application do
    [mod: {Hello.Application, []}, extra_applications: [:logger, :inets] ++ @crypto ++ @ssl]
  end
end
