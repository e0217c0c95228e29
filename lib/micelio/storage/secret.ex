defmodule Micelio.Storage.Secret do
  @moduledoc false
  # Wraps a secret setting so `inspect/1` of a resolved config, a crash
  # report or a log line never shows it.
  defstruct [:value]

  @type t :: %__MODULE__{value: String.t()}

  def wrap(nil), do: nil
  def wrap(value) when is_binary(value), do: %__MODULE__{value: value}

  def unwrap(nil), do: nil
  def unwrap(%__MODULE__{value: value}), do: value

  defimpl Inspect do
    def inspect(_secret, _opts), do: "#Micelio.Storage.Secret<redacted>"
  end
end
