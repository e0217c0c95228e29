defmodule Micelio.Storage.Test.UploadApp do
  @moduledoc false
  # A real Phoenix app for the browser upload tests: an endpoint on Bandit
  # (loopback, a free port), a router, and one LiveView with three upload
  # modes: external POST, external PUT (both through the shipped
  # uploader), and channel uploads through the UploadWriter. The LiveView
  # tells the test process (set with `configure/1`) what it saw.

  @doc "Starts the endpoint; returns its base URL."
  def start!(config) do
    configure(config)

    Application.put_env(:micelio_storage, __MODULE__.Endpoint,
      adapter: Bandit.PhoenixAdapter,
      http: [ip: {127, 0, 0, 1}, port: 0],
      server: true,
      url: [host: "127.0.0.1"],
      check_origin: false,
      secret_key_base: String.duplicate("micelio-storage-upload-app-", 3),
      live_view: [signing_salt: "micelio-lv-salt"],
      render_errors: [formats: [html: __MODULE__.ErrorHTML], layout: false],
      pubsub_server: __MODULE__.PubSub
    )

    # Channel uploads (the UploadWriter's) run in channels, which need one.
    {:ok, _} = Application.ensure_all_started(:phoenix_pubsub)
    {:ok, _} = Application.ensure_all_started(:bandit)
    {:ok, _} = Phoenix.PubSub.Supervisor.start_link(name: __MODULE__.PubSub)

    {:ok, _} = __MODULE__.Endpoint.start_link()
    {:ok, {_ip, port}} = __MODULE__.Endpoint.server_info(:http)
    "http://127.0.0.1:#{port}"
  end

  @doc "What the LiveView uses: `%{store: opts, test: pid, ...}`."
  def configure(config), do: :persistent_term.put(__MODULE__, config)
  def config, do: :persistent_term.get(__MODULE__)

  defmodule ErrorHTML do
    def render(template, _assigns), do: Phoenix.Controller.status_message_from_template(template)
  end

  defmodule Layout do
    use Phoenix.Component

    def root(assigns) do
      ~H"""
      <!DOCTYPE html>
      <html>
        <head>
          <meta name="csrf-token" content={Phoenix.Controller.get_csrf_token()} />
          <script src="/js/phoenix/phoenix.js"></script>
          <script src="/js/live_view/phoenix_live_view.js"></script>
          <script type="module">
            import {MicelioStorageUploaders} from "/js/micelio/micelio_storage_uploaders.js"
            let csrf = document.querySelector("meta[name='csrf-token']").getAttribute("content")
            let liveSocket = new LiveView.LiveSocket("/live", Phoenix.Socket, {
              uploaders: MicelioStorageUploaders,
              params: {_csrf_token: csrf}
            })
            liveSocket.connect()
            window.liveSocket = liveSocket
          </script>
        </head>
        <body><%= @inner_content %></body>
      </html>
      """
    end
  end

  defmodule UploadLive do
    use Phoenix.LiveView

    alias Micelio.Storage.LiveView, as: StorageLive

    @impl true
    def mount(_params, _session, socket) do
      config = Micelio.Storage.Test.UploadApp.config()
      mode = socket.assigns.live_action

      socket =
        socket
        |> assign(mode: mode, uploaded: [])
        |> allow_upload(:file, upload_options(mode, config))

      {:ok, socket}
    end

    defp upload_options(mode, config) when mode in [:post, :put] do
      [
        accept: :any,
        max_entries: 1,
        max_file_size: 50_000_000,
        progress: &handle_progress/3,
        external: &StorageLive.presign_upload(&1, &2, store: config.store, uploader: mode)
      ]
    end

    defp upload_options(:writer, config) do
      [
        accept: :any,
        max_entries: 1,
        max_file_size: 100_000_000,
        chunk_size: 256_000,
        progress: &handle_progress/3,
        writer: fn _name, entry, _socket ->
          {Micelio.Storage.LiveView.UploadWriter,
           store: config.store, key: "writer/#{entry.uuid}"}
        end
      ]
    end

    def handle_progress(:file, entry, socket) do
      config = Micelio.Storage.Test.UploadApp.config()
      send(config.test, {:progress, socket.assigns.mode, entry.progress})

      cond do
        # The cancel case: cancel once part of the file went in.
        config[:cancel_at] && entry.progress >= config.cancel_at && not entry.done? ->
          # The test looks at the server before the cancel, then says go.
          send(config.test, {:cancelling, entry.uuid, self()})

          receive do
            :go -> {:noreply, cancel_upload(socket, :file, entry.ref)}
          end

        true ->
          {:noreply, socket}
      end
    end

    @impl true
    def handle_event("validate", _params, socket), do: {:noreply, socket}

    def handle_event("save", _params, socket) do
      config = Micelio.Storage.Test.UploadApp.config()

      keys = consume_uploaded_entries(socket, :file, fn meta, _entry -> {:ok, meta.key} end)

      for key <- keys, do: send(config.test, {:uploaded, socket.assigns.mode, key})
      {:noreply, update(socket, :uploaded, &(&1 ++ keys))}
    end

    @impl true
    def render(assigns) do
      ~H"""
      <form id="upload" phx-change="validate" phx-submit="save">
        <.live_file_input upload={@uploads.file} />
        <button type="submit" id="submit">Upload</button>
      </form>
      <p :for={key <- @uploaded} class="uploaded"><%= key %></p>
      """
    end
  end

  defmodule Router do
    use Phoenix.Router
    import Phoenix.LiveView.Router

    pipeline :browser do
      plug(:accepts, ["html"])
      plug(:fetch_session)
      plug(:protect_from_forgery)
      plug(:put_root_layout, html: {Micelio.Storage.Test.UploadApp.Layout, :root})
    end

    scope "/" do
      pipe_through(:browser)
      live("/post", Micelio.Storage.Test.UploadApp.UploadLive, :post)
      live("/put", Micelio.Storage.Test.UploadApp.UploadLive, :put)
      live("/writer", Micelio.Storage.Test.UploadApp.UploadLive, :writer)
    end
  end

  defmodule Endpoint do
    use Phoenix.Endpoint, otp_app: :micelio_storage

    @session [store: :cookie, key: "_upload_app", signing_salt: "micelio-salt"]

    socket("/live", Phoenix.LiveView.Socket, websocket: [connect_info: [session: @session]])

    plug(Plug.Static, at: "/js/phoenix", from: {:phoenix, "priv/static"}, only: ~w(phoenix.js))

    plug(Plug.Static,
      at: "/js/live_view",
      from: {:phoenix_live_view, "priv/static"},
      only: ~w(phoenix_live_view.js)
    )

    # The uploader exactly as the library ships it.
    plug(Plug.Static,
      at: "/js/micelio",
      from: {:micelio_storage, "priv/static"},
      only: ~w(micelio_storage_uploaders.js)
    )

    plug(Plug.Session, @session)
    plug(Micelio.Storage.Test.UploadApp.Router)
  end
end
