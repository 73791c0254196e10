# The agent's link to the broker: Wi-Fi, the clock (NTP), the MQTT session (verified TLS, last will,
# subscriptions) and publishing the retained state. Agent (agent.py) is a Link: these methods work on
# the attributes Agent.__init__ sets (cfg, network, mqtt_class, tls, device_id, cmd_topics,
# state_topic, reporter, gate, clock_set, intake, client) and hand incoming messages to its intake
# (intake.py: on_message, on_oversize). Nothing here retries: a failure raises OSError to the
# agent's one retry loop.
import time

from ota import jobs, state, trigger
from ota import mqtt as mqtt_client
from ota.errors import OtaError

_WIFI_WAIT_MS = 20000
_NTP_ZERO = 2085978496  # Unix time of NTP timestamp 2**32 (ntptime's answer to a transmit time of 0)
_WIFI_POLL_S = 0.1


class Link:
    def _wifi(self):
        # Raises OSError when the link is not up within _WIFI_WAIT_MS (or the health deadline).
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
        wait_ms = _WIFI_WAIT_MS if self.gate is None else min(_WIFI_WAIT_MS, self.gate.remaining_ms())
        start = state.ticks_ms()
        while not wlan.isconnected():
            self.feed()
            if state.ticks_diff(state.ticks_ms(), start) > wait_ms:
                wlan.disconnect()
                raise OSError(110, "wifi not connected")
            time.sleep(_WIFI_POLL_S)

    def _set_clock(self):
        # TLS certificate checks need the time; a failure is tolerated (plain MQTT, http URLs work).
        if self.clock_set:
            return
        try:
            import ntptime

            ntptime.settime()
        except Exception as e:  # noqa: BLE001  a short or forged reply raises ValueError/IndexError in
            # micropython-lib's ntptime (struct.unpack of msg[40:44]): NTP failed, the agent goes on
            print("agent: ntptime failed:", e)
            return
        # An unsynchronised server sends a transmit time of 0, which micropython-lib's ntptime turns
        # into 2036-02-07 06:28:16 (its era rule adds 2**32 s); state.unix_time() is None for a clock
        # before 2024. Neither counts as set: the next connect asks again (agent.run clears it too).
        now = state.unix_time()
        self.clock_set = now is not None and abs(now - _NTP_ZERO) > 60
        if not self.clock_set:
            print("agent: ntptime gave no usable time:", now)

    def _tls_context(self, mqtt):
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

    def _mqtt(self):
        # Connects, subscribes, publishes the retained state. Raises OSError (MQTTException is
        # turned into OSError: the loop handles both the same way).
        mqtt_class = self.mqtt_class
        if mqtt_class is None:
            from umqtt.simple import MQTTClient as mqtt_class
        mqtt = self.cfg["mqtt"]
        context = self._tls_context(mqtt) if self.tls else None
        client = mqtt_client.client(mqtt_class, self.device_id, mqtt.get("host"),
                                    mqtt.get("port") or 0,  # 0: umqtt picks 1883, or 8883 with TLS
                                    mqtt.get("user"), mqtt.get("password"),
                                    mqtt["keepalive_s"], ssl_context=context,
                                    max_payload=trigger.MAX_PAYLOAD, on_oversize=self.intake.on_oversize)
        client.set_callback(self.intake.on_message)
        client.set_last_will(self.state_topic.encode(), self.reporter.offline(), retain=True, qos=1)
        try:
            client.connect()
            self.client = client
            for topic in self.cmd_topics:
                client.subscribe(topic.encode(), qos=1)
        except Exception as e:  # umqtt's MQTTException (CONNACK refused), assert on a garbled reply
            self._drop()
            if isinstance(e, OSError):
                raise
            raise OSError(111, "mqtt: %r" % e)
        self.last_send = state.ticks_ms()
        if self.ha is not None:  # Home Assistant (ha.py): the entity, and the release it may install
            client.subscribe(self.ha.release_topic.encode(), qos=1)
            client.publish(self.ha.config_topic.encode(), self.ha.discovery(), retain=True)
        self._publish_again()

    def _drop(self):
        client, self.client = self.client, None
        if client is not None and client.sock is not None:
            try:
                client.sock.close()
            except OSError:
                pass

    def _disconnect(self):
        # A clean DISCONNECT: the broker discards the last will, the retained state stays as it is.
        client, self.client = self.client, None
        if client is not None:
            try:
                client.disconnect()
            except OSError:
                pass

    def publish(self, state_name, **fields):
        # Builds the state message; sends it if connected. QoS 0: umqtt's QoS 1 publish waits for the
        # PUBACK inside wait_msg, which would re-enter the intake. Raises OSError.
        if state_name in jobs.TERMINAL and fields.get("job") is not None and "t" not in fields:
            current = self.jobs.current or {}
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

    def _publish_again(self):
        # After a (re)connect: the latest state, rebuilt with fresh heap/uptime/ts.
        last = self.reporter.last_state
        self.publish(last[0], **last[1])
