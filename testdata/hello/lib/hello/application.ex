defmodule Hello.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    # HELLO_DUMP_START=1: print how the VM was started and stop (the launcher's equivalence test).
    if System.get_env("HELLO_DUMP_START") == "1" do
      release_env =
        System.get_env()
        |> Enum.filter(fn {k, _} -> String.starts_with?(k, "RELEASE_") or k == "PHX_SERVER" end)
        |> Enum.sort()

      IO.puts("ARGS " <> inspect(:init.get_arguments(), limit: :infinity))
      IO.puts("PLAIN " <> inspect(:init.get_plain_arguments(), limit: :infinity))
      IO.puts("ENV " <> inspect(release_env, limit: :infinity))
      IO.puts("NODE " <> inspect(node() |> Atom.to_string() |> String.split("@") |> hd()))
      IO.puts("CWD " <> File.cwd!())
      IO.puts("RUNTIME " <> inspect(Application.get_env(:hello, :runtime_marker)))
      System.halt(0)
    end

    port = String.to_integer(System.get_env("PORT", "4000"))

    {:ok, _pid} =
      :inets.start(:httpd,
        port: port,
        server_name: ~c"hello",
        server_root: ~c"/tmp",
        document_root: ~c"/tmp",
        bind_address: :any,
        modules: [:hello_handler]
      )

    Supervisor.start_link([], strategy: :one_for_one, name: Hello.Supervisor)
  end
end
