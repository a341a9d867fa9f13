import Config

# As Phoenix's generated runtime.exs does: configuration read from the environment at boot.
if config_env() == :prod do
  config :hello, runtime_marker: System.get_env("HELLO_RUNTIME_MARKER", "from-runtime-exs")
end
