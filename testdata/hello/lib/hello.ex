defmodule Hello do
  @moduledoc "Answers HTTP requests with facts about the running container."

  @greeting "hello from imgbuild"

  def report("/crypto") do
    digest = :crypto.hash(:sha256, "imgbuild") |> Base.encode16(case: :lower)
    "sha256=#{digest}\n"
  end

  def report(_path) do
    """
    #{@greeting}
    uid=#{uid()}
    encoding=#{:file.native_name_encoding()}
    cwd=#{File.cwd!()}
    """
  end

  defp uid do
    "/proc/self/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value("unknown", fn
      "Uid:" <> rest -> rest |> String.split() |> hd()
      _ -> nil
    end)
  end
end
