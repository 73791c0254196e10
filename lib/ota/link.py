# The device's link to the broker: Wi-Fi, the clock (NTP), the MQTT session (verified TLS, last will,
# subscriptions) and publishing the retained state.
#
#   link = Link(cfg, device_id, reporter, on_message, on_oversize)   # nothing connects yet
#   link.connect()            # Wi-Fi, the clock, the MQTT session: raises OSError
#   link.check()              # one poll: messages go to on_message(topic, payload); raises OSError
#   link.publish("idle")      # the retained state (state.Reporter builds it); raises OSError
#   link.publish_entity()     # Home Assistant's entity state for it (ha.py; a no-op without ha)
#   link.drop()               # the connection is gone: close the socket, no DISCONNECT
#   link.disconnect()         # a clean DISCONNECT: no last will
#
# The Link holds the connection and nothing else: which messages mean what is the agent's (agent.py)
# and the intake's (intake.py). Nothing here retries: a failure raises OSError to the agent's one
# retry loop.
import time

from ota import jobs as job_states
from ota import state, trigger
from ota import mqtt as mqtt_client
from ota.errors import OtaError

_WIFI_WAIT_MS = 20000
_NTP_ZERO = 2085978496  # Unix time of NTP timestamp 2**32 (ntptime's answer to a transmit time of 0)
_WIFI_POLL_S = 0.1


class Link:
    # cfg: the whole config (config.load/merge: every key there). reporter: state.Reporter, which
    # builds every state message and remembers the last one. on_message(topic, payload) and
    # on_oversize(topic, size): umqtt's callbacks (ota.mqtt drains a payload too big to hold).
    # network_module, mqtt_class: None imports network and umqtt.simple (unit tests pass fakes).
    # feed: the watchdog's, called while waiting for Wi-Fi. ha: ha.HomeAssistant or None (its
    # discovery config and release topic at every connect, its entity state after every state).
    # jobs: jobs.Jobs, read for the cost (telemetry.py) a final state carries; None: none carried.
    def __init__(self, cfg, device_id, reporter, on_message, on_oversize, network_module=None,
                 mqtt_class=None, feed=None, ha=None, jobs=None):
        self.cfg = cfg
        self.device_id = device_id
        self.reporter = reporter
        self.on_message = on_message
        self.on_oversize = on_oversize
        self.network = network_module
        self.mqtt_class = mqtt_class
        self.feed = feed or state.no_watchdog
        self.tls = bool(cfg["mqtt"]["tls"])
        self.ha = ha
        self.jobs = jobs
        self.cmd_topics, self.state_topic = topics(cfg, device_id)
        self.client = None  # the connected MQTTClient, None while the link is down
        self.context = None  # the MQTT session's SSLContext: made at the first TLS connect, then kept
        self.clock_set = False
        self.last_send = 0

    @property
    def connected(self):
        return self.client is not None

    def connect(self, limit_ms=None):
        # Wi-Fi, the clock, the MQTT session. limit_ms: the Wi-Fi wait's bound (the health gate's
        # time left). Raises OSError; MemoryError on a fragmented heap.
        self.wifi(limit_ms)
        self.set_clock()
        self.open()

    def wifi(self, limit_ms=None):
        # Raises OSError when the link is not up within _WIFI_WAIT_MS (or limit_ms).
        network = self.network
        if network is None:
            import network
        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if wlan.isconnected():
            return
        # Once asked to connect, the ESP32 driver keeps (re)associating by itself, and connect()
        # meanwhile raises OSError('Wifi Internal Error') (docs/CHIP.md): connect only from idle, and
        # after a wait that ran out, disconnect so that the next turn starts a fresh association.
        if wlan.status() == network.STAT_IDLE:
            wifi = self.cfg["wifi"]
            wlan.connect(wifi.get("ssid"), wifi.get("password"))
        wait_ms = _WIFI_WAIT_MS if limit_ms is None else min(_WIFI_WAIT_MS, limit_ms)
        start = state.ticks_ms()
        while not wlan.isconnected():
            self.feed()
            if state.ticks_diff(state.ticks_ms(), start) > wait_ms:
                wlan.disconnect()
                raise OSError(110, "wifi not connected")
            time.sleep(_WIFI_POLL_S)

    def set_clock(self):
        # TLS certificate checks need the time; a failure is tolerated (plain MQTT, http URLs work).
        # A no-op once the clock is set. Raises nothing.
        if self.clock_set:
            return
        try:
            import ntptime

            ntptime.settime()
        except Exception as e:  # a short or forged reply raises ValueError/IndexError in
            # micropython-lib's ntptime (struct.unpack of msg[40:44]): NTP failed, the agent goes on
            print("agent: ntptime failed:", e)
            return
        # An unsynchronised server sends a transmit time of 0, which micropython-lib's ntptime turns
        # into 2036-02-07 06:28:16 (its era rule adds 2**32 s); state.unix_time() is None for a clock
        # before 2024. Neither counts as set: the next connect asks again (drop(resync=True) too).
        now = state.unix_time()
        self.clock_set = now is not None and abs(now - _NTP_ZERO) > 60
        if not self.clock_set:
            print("agent: ntptime gave no usable time:", now)

    def tls_context(self, mqtt):
        # The verified context for MQTT over TLS, built as the firmware download's is (https.context:
        # CERT_REQUIRED, DER or PEM); ota.mqtt.client hands it to either umqtt.simple flavour
        # (micropython-lib's ssl=<SSLContext>, PyPI 1.3.4's ssl=True + `import ussl`) with
        # server_hostname = the broker host: SNI and the name check. Raises OSError (CA file), which
        # the agent's loop retries like any link failure.
        from ota import https

        try:
            return https.context(mqtt["ca_path"])
        except OtaError as e:
            raise OSError(str(e))

    def open(self):
        # The MQTT session: connects, subscribes, publishes the retained state again. Raises OSError
        # (MQTTException is turned into OSError: the loop handles both the same way).
        mqtt_class = self.mqtt_class
        if mqtt_class is None:
            from umqtt.simple import MQTTClient as mqtt_class
        mqtt = self.cfg["mqtt"]
        # One context for the boot, as the download has (workspace.py): made at the first connect,
        # when Wi-Fi is up and its random generator gets a live seed, and kept. A reconnect then
        # neither reads and parses the CA again nor leaves one more context to the collector. A
        # context that could not be made is tried again at the next connect.
        if self.tls and self.context is None:
            self.context = self.tls_context(mqtt)
        client = mqtt_client.client(mqtt_class, self.device_id, mqtt.get("host"),
                                    mqtt.get("port") or 0,  # 0: umqtt picks 1883, or 8883 with TLS
                                    mqtt.get("user"), mqtt.get("password"),
                                    mqtt["keepalive_s"], ssl_context=self.context,
                                    max_payload=trigger.MAX_PAYLOAD, on_oversize=self.on_oversize)
        client.set_callback(self.on_message)
        client.set_last_will(self.state_topic.encode(), self.reporter.offline(), retain=True, qos=1)
        try:
            client.connect()
            self.client = client
            for topic in self.cmd_topics:
                client.subscribe(topic.encode(), qos=1)
        except Exception as e:  # umqtt's MQTTException (CONNACK refused), assert on a garbled reply
            self.drop()
            if isinstance(e, OSError):
                raise
            raise OSError(111, "mqtt: %r" % e)
        self.last_send = state.ticks_ms()
        if self.ha is not None:  # Home Assistant (ha.py): the entity, and the release it may install
            client.subscribe(self.ha.release_topic.encode(), qos=1)
            client.publish(self.ha.config_topic.encode(), self.ha.discovery(), retain=True)
        self._publish_again()

    def check(self):
        # One poll of the session: each waiting message goes to on_message. Raises OSError when the
        # link is gone (also for a packet the broker cut short).
        try:
            self.client.check_msg()
        except (IndexError, TypeError) as e:  # umqtt indexes a read the broker cut short (b"", None)
            raise OSError(104, "MQTT packet cut short: %r" % e)

    def keepalive(self):
        # A PINGREQ when nothing was sent for half the keepalive. Raises OSError.
        keepalive_ms = self.cfg["mqtt"]["keepalive_s"] * 1000
        if keepalive_ms and state.ticks_diff(state.ticks_ms(), self.last_send) > keepalive_ms // 2:
            self.client.ping()
            self.last_send = state.ticks_ms()

    def drop(self, resync=False):
        # The connection is lost: close the socket (no DISCONNECT: the broker fires the last will).
        # resync: ask NTP again at the next connect (a wrong time would fail every TLS check for good).
        client, self.client = self.client, None
        if resync:
            self.clock_set = False
        if client is not None and client.sock is not None:
            try:
                client.sock.close()
            except OSError:
                pass

    def disconnect(self):
        # A clean DISCONNECT: the broker discards the last will, the retained state stays as it is.
        client, self.client = self.client, None
        if client is not None:
            try:
                client.disconnect()
            except OSError:
                pass

    def publish(self, state_name, **fields):
        # Builds the state message; sends it if connected. QoS 0: umqtt's QoS 1 publish waits for the
        # PUBACK inside wait_msg, which would re-enter on_message. Raises OSError.
        if state_name in job_states.TERMINAL and fields.get("job") is not None and "t" not in fields:
            current = (self.jobs.current if self.jobs is not None else None) or {}
            if current.get("id") == fields["job"] and "t_to" in current:  # its outcome carries its cost
                from ota import telemetry  # imported when a job ended: an idle device keeps the RAM

                fields["t"] = telemetry.record(current)
        msg = self.reporter.message(state_name, **fields)
        if self.client is not None:
            self.client.publish(self.state_topic.encode(), msg, retain=True)
            self.publish_entity()
            self.last_send = state.ticks_ms()

    def publish_entity(self):
        # Home Assistant's entity state (ha.py) for the last state message: after each one, and when
        # a release announcement changes what is offered. Raises OSError.
        if self.ha is not None and self.client is not None:
            name, fields = self.reporter.last_state
            self.client.publish(self.ha.state_topic.encode(), self.ha.entity(name, fields.get("progress")),
                                retain=True)

    def refuse(self, reason, detail, keep_state=False):
        # A trigger that is not run, said on the state topic. keep_state (a job runs, or the outcome
        # of the last one must stay): the last state again with the reason added; else "failed".
        # Raises OSError.
        if not keep_state:
            self.publish("failed", reason=reason, detail=detail)
            return
        name, fields = self.reporter.last_state
        fields = dict(fields)
        fields.update(reason=reason, detail=detail)
        self.publish(name, **fields)

    def _publish_again(self):
        # After a (re)connect: the latest state, rebuilt with fresh heap/uptime/ts.
        last = self.reporter.last_state
        self.publish(last[0], **last[1])


def topics(cfg, device_id):
    # -> ((fleet command topic, own command topic), state topic) for this device.
    names = cfg["topics"]
    return ((names["cmd_root"], names["cmd_device"].replace("{id}", device_id)),
            names["state"].replace("{id}", device_id))
