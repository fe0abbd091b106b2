#!/usr/bin/env python3
"""A headless PJSUA2 phone driven line by line, for the end-to-end call tests.

Registers USER@DOMAIN with digest through the outbound proxy PROXY over one transport
(UDP or TCP), with a null sound device, SIP bound to 127.0.0.1:SIP_PORT and RTP to
127.0.0.1:RTP_PORT (+RTCP), no STUN/ICE/TURN and no address rewriting, so nothing leaves
loopback. Then it obeys commands read from stdin, one a line:

    dial SIP-URI      place a call
    answer            answer the ringing incoming call (200)
    hangup            hang up (CANCEL before an answer, BYE after, 486 to an incoming call)
    quit              un-REGISTER and exit

and reports what happens on stdout, one JSON object a line:

    {"event": "registered", "code": 200}           (or "register_failed" with the code)
    {"event": "incoming", "call_id": ..., "from": ...}
    {"event": "ringing", "call_id": ...}             (a 180 to our INVITE)
    {"event": "established", "call_id": ...}         (CONFIRMED: 200 and ACK)
    {"event": "media", "call_id": ...}               (the audio stream is active)
    {"event": "rtp", "call_id": ..., "rx": N}        (the first RTP packets received)
    {"event": "closed", "call_id": ..., "code": N, "reason": ..., "rx": N}
    {"event": "error", "what": ...}

With --auto-answer every incoming call is answered 200 at once; without it the phone
answers 180 and waits for "answer". It exits by itself when stdin closes.

The pjsua2 module comes from the `pjsua2-python` wheel (PJSIP 2.15.1), installed into a
virtual environment by scripts/test.
"""
import argparse
import gc
import json
import os
import queue
import sys
import threading
import time

import pjsua2 as pj


def emit(event, **kw):
    sys.stdout.write(json.dumps({"event": event, **kw}) + "\n")
    sys.stdout.flush()


class Call(pj.Call):
    def __init__(self, phone, acc, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.phone = phone
        self.sip_call_id = ""
        self.rx = 0
        self.rtp_reported = False
        self.confirmed = False

    def refresh_call_id(self):
        try:
            self.sip_call_id = self.getInfo().callIdString
        except pj.Error:
            pass

    def onCallState(self, prm):
        ci = self.getInfo()
        self.sip_call_id = ci.callIdString
        if ci.state == pj.PJSIP_INV_STATE_EARLY and ci.role == pj.PJSIP_ROLE_UAC:
            if ci.lastStatusCode == 180:
                emit("ringing", call_id=self.sip_call_id)
        elif ci.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            emit("established", call_id=self.sip_call_id)
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.sample_rtp()
            emit("closed", call_id=self.sip_call_id, code=ci.lastStatusCode,
                 reason=ci.lastReason, rx=self.rx)
            self.phone.closed.append(self)

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                aud = self.getAudioMedia(i)
                adm = pj.Endpoint.instance().audDevManager()
                # null device <-> call, both ways: the null capture device sends silence
                adm.getCaptureDevMedia().startTransmit(aud)
                aud.startTransmit(adm.getPlaybackDevMedia())
                emit("media", call_id=ci.callIdString)

    def sample_rtp(self):
        try:
            st = self.getStreamStat(0)
            self.rx = max(self.rx, st.rtcp.rxStat.pkt)
        except pj.Error:
            return  # no stream (yet, or any more)
        if self.rx > 0 and not self.rtp_reported:
            self.rtp_reported = True
            emit("rtp", call_id=self.sip_call_id, rx=self.rx)


class Account(pj.Account):
    def __init__(self, phone):
        super().__init__()
        self.phone = phone
        self.registered = None

    def onRegState(self, prm):
        if prm.code == 200 and prm.expiration > 0:
            if self.registered != 200:
                emit("registered", code=prm.code)
            self.registered = 200
        elif prm.expiration == 0 and prm.code == 200:
            emit("unregistered", code=prm.code)
        elif prm.code != 200 and prm.code // 100 != 1:
            self.registered = prm.code
            emit("register_failed", code=prm.code, reason=prm.reason)

    def onIncomingCall(self, prm):
        call = Call(self.phone, self, prm.callId)
        self.phone.calls.append(call)
        ci = call.getInfo()
        call.sip_call_id = ci.callIdString
        emit("incoming", call_id=ci.callIdString, **{"from": ci.remoteUri})
        op = pj.CallOpParam()
        op.statusCode = 200 if self.phone.auto_answer else 180
        call.answer(op)


class Phone:
    def __init__(self, auto_answer):
        self.auto_answer = auto_answer
        self.calls = []
        self.closed = []

    def current(self):
        live = [c for c in self.calls if c not in self.closed]
        return live[-1] if live else None


def stdin_reader(q):
    for line in sys.stdin:
        q.put(line.strip())
    q.put("quit")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--domain", required=True, help="the AoR's host, e.g. 127.0.0.1")
    ap.add_argument("--proxy", required=True, help="outbound proxy HOST:PORT")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--auto-answer", action="store_true")
    ap.add_argument("--log-file", default="")
    ap.add_argument("--log-level", type=int, default=4)
    a = ap.parse_args()

    phone = Phone(a.auto_answer)
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0          # events are pumped here: no pjsua worker threads
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.stunServer = pj.StringVector()
    cfg.uaConfig.userAgent = "pjsua2-test"
    cfg.logConfig.level = a.log_level
    cfg.logConfig.consoleLevel = 0
    if a.log_file:
        cfg.logConfig.filename = a.log_file
    cfg.medConfig.noVad = True         # keep sending RTP during silence
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()     # no sound card

    tcfg = pj.TransportConfig()
    tcfg.port = a.sip_port
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    kind = pj.PJSIP_TRANSPORT_TCP if a.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
    ep.transportCreate(kind, tcfg)
    ep.libStart()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{a.user}@{a.domain}"
    acfg.regConfig.registrarUri = f"sip:{a.domain}"
    acfg.regConfig.timeoutSec = 600
    acfg.sipConfig.proxies.append(f"sip:{a.proxy};transport={a.transport};lr")
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", a.user, 0, a.password))
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.turnEnabled = False
    acfg.natConfig.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
    acfg.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
    acfg.natConfig.contactRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.mediaConfig.transportConfig.port = a.rtp_port
    acfg.mediaConfig.transportConfig.portRange = 2
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
    acc = Account(phone)
    acc.create(acfg)

    commands = queue.Queue()
    threading.Thread(target=stdin_reader, args=(commands,), daemon=True).start()
    running = True
    while running:
        ep.libHandleEvents(20)
        for c in phone.calls:
            if c not in phone.closed:
                c.sample_rtp()
        try:
            line = commands.get_nowait()
        except queue.Empty:
            continue
        verb, _, arg = line.partition(" ")
        try:
            if verb == "dial":
                call = Call(phone, acc)
                phone.calls.append(call)
                call.makeCall(arg.strip(), pj.CallOpParam(True))
                call.refresh_call_id()
            elif verb == "answer":
                call = phone.current()
                if call is None:
                    emit("error", what="answer: no call")
                else:
                    op = pj.CallOpParam()
                    op.statusCode = 200
                    call.answer(op)
            elif verb == "hangup":
                call = phone.current()
                if call is None:
                    emit("error", what="hangup: no call")
                else:
                    call.hangup(pj.CallOpParam(True))
            elif verb == "quit":
                running = False
            elif verb:
                emit("error", what=f"unknown command {verb!r}")
        except pj.Error as e:
            emit("error", what=f"{verb}: {e.info()}")

    # un-REGISTER, end every call, then free every Call/Account wrapper BEFORE
    # libDestroy(): their destructors abort once the library is gone
    try:
        acc.setRegistration(False)
    except pj.Error:
        pass
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        ep.libHandleEvents(20)
    ep.hangupAllCalls()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        ep.libHandleEvents(20)
    phone.calls.clear()
    phone.closed.clear()
    acc.shutdown()
    del acc
    gc.collect()
    ep.libDestroy()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
