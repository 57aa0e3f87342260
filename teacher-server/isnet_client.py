"""The labelling tools' side of teacher-server (pretrain/label, bench/label-video): starts
`run --model isnet --output probabilities` at nice 19 on a free loopback port, and asks it for a
frame's foreground map over KServe v2 binary tensors."""
import json
import struct
import time
import urllib.error
import urllib.request

from teacher_process import TeacherProcess


def infer(url, w, h, rgb, attempts=20):
    """The foreground map of an RGB frame, w x h, 0..255 a pixel (the server's probability is
    its 0..255 map over 255: rounded back). A busy teacher (429, 503) is asked again, at most
    `attempts` times."""
    header = json.dumps({'inputs': [{'name': 'image', 'datatype': 'UINT8', 'shape': [1, h, w, 3],
                                     'parameters': {'binary_data_size': len(rgb)}}],
                         'outputs': [{'name': 'mask', 'parameters': {'binary_data': True}}]}).encode()
    req = urllib.request.Request(url + '/v2/models/teacher/infer', data=header + rgb, headers={
        'Inference-Header-Content-Length': str(len(header)),
        'Content-Type': 'application/octet-stream'})
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                body = r.read()
                jlen = int(r.headers['Inference-Header-Content-Length'])
            break
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503):
                raise
            time.sleep(float(e.headers.get('Retry-After', '1')))
    else:
        raise RuntimeError('teacher busy for too long')
    out = json.loads(body[:jlen])['outputs'][0]
    if out['datatype'] != 'FP32' or out['shape'][-2:] != [h, w]:
        raise RuntimeError('unexpected teacher output %s %s; start it with --output '
                           'probabilities' % (out['datatype'], out['shape']))
    probs = struct.unpack('<%df' % (w * h), body[jlen:jlen + 4 * w * h])
    return bytes(min(255, max(0, int(p * 255 + 0.5))) for p in probs)


def start(threads):
    """A fresh isnet teacher at nice 19, once ready (a TeacherProcess: its url, stop()); raises
    TeacherError (a RuntimeError) if it did not start."""
    flags = ['--model', 'isnet', '--output', 'probabilities', '--max-queue', '1']
    if threads:
        flags += ['--threads', str(threads)]
    # At nice 19 on busy cores the model can take minutes to load.
    return TeacherProcess(*flags, nice=19, quiet=False, timeout=600)
